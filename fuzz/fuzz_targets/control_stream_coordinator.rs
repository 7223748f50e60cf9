//! The control stream as the coordinator reads it after the QUIC handshake
//! (`coordinator::control::session::run`): the coordinator's own `FrameReader` over the
//! bytes, two `ClientMsg` frames under the handshake limit (hello, proof), then session
//! frames under the session limit, each read as the session's `Incoming` reads it (a
//! `serde_json::Value` first, so a malformed path report is ignored, not fatal).
//!
//! `Incoming` is private to the session; its ten-line `Deserialize` is mirrored here.
#![no_main]

use std::sync::OnceLock;

use coordinator::control::frame::FrameReader;
use coordinator::control::session::{CLIENT_FRAME_LIMIT, SESSION_FRAME_LIMIT};
use libfuzzer_sys::fuzz_target;
use mesh_proto::control::ClientMsg;

/// As `coordinator::control::session::Incoming` reads a message after the handshake.
#[allow(dead_code)] // the variants' contents are what the session uses, not this target
#[derive(Debug)]
enum Incoming {
    Msg(ClientMsg),
    BadPaths(String),
}

impl<'de> serde::Deserialize<'de> for Incoming {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Incoming, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let paths = value.get("type").and_then(|t| t.as_str()) == Some("paths");
        match serde_json::from_value::<ClientMsg>(value) {
            Ok(msg) => Ok(Incoming::Msg(msg)),
            Err(e) if paths => Ok(Incoming::BadPaths(e.to_string())),
            Err(e) => Err(serde::de::Error::custom(e)),
        }
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

fuzz_target!(|stream: &[u8]| {
    runtime().block_on(async {
        let mut frames = FrameReader::new(stream, CLIENT_FRAME_LIMIT);
        for _ in 0..2 {
            match frames.next::<ClientMsg>().await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
        frames.set_limit(SESSION_FRAME_LIMIT);
        loop {
            match frames.next::<Incoming>().await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    });
});
