//! A local API request line as meshd reads it (`meshd/src/api.rs`: one line, at most
//! 64 KiB, UTF-8, `serde_json::from_str::<Request>` of the line without its line end).
//! What decodes must survive `decode(encode(request)) == request`; meshd's answer to a
//! bad request is one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::api::{Request, Response};

fuzz_target!(|data: &[u8]| {
    let line = match data.iter().position(|&b| b == b'\n') {
        Some(end) => &data[..=end],
        None => data,
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    match serde_json::from_str::<Request>(line.trim_end()) {
        Ok(request) => {
            let text = serde_json::to_string(&request).expect("a request encodes");
            assert!(!text.contains('\n'));
            let again: Request = serde_json::from_str(&text).expect("a re-encoded request decodes");
            assert_eq!(again, request);
        }
        Err(e) => {
            let answer = serde_json::to_string(&Response::error(format!("bad request: {e}")))
                .expect("an error answer encodes");
            assert!(!answer.contains('\n'));
        }
    }
});
