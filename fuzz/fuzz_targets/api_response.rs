//! A local API answer as meshctl reads it (`meshctl/src/status.rs`, `parse_answer`:
//! `serde_json::from_slice::<Response>`, else the `status` field as a `Status`, to say what
//! is wrong). What decodes must survive `decode(encode(response)) == response`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::api::{Response, Status};

fuzz_target!(|line: &[u8]| {
    match serde_json::from_slice::<Response>(line) {
        Ok(response) => {
            let text = serde_json::to_vec(&response).expect("a response encodes");
            let again: Response =
                serde_json::from_slice(&text).expect("a re-encoded response decodes");
            assert_eq!(again, response);
        }
        Err(_) => {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) {
                if let Some(status) = value.get("status") {
                    let _ = serde_json::from_value::<Status>(status.clone());
                }
            }
        }
    }
});
