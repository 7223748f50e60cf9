//! A network's policy document as the coordinator reads it from an admin
//! (`mesh_proto::policy::Policy::parse`: TOML, then selectors, ports, groups and the
//! document's own tests). An error names a line of the document (or 0, the whole); what
//! parses passes its tests, and its ports and selectors print back to what they are.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::policy::{Policy, Ports, Selector};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::parse(text) {
        Ok(policy) => policy,
        Err(e) => {
            assert!(e.line <= text.split('\n').count(), "{e} of {text:?}");
            return;
        }
    };
    assert_eq!(policy.run_tests(), Ok(()));
    for rule in &policy.rules {
        for ports in &rule.ports {
            assert_eq!(Ports::parse(&ports.to_string()), Ok(*ports));
        }
        for selector in rule.from.iter().chain(&rule.to) {
            assert_eq!(
                Selector::parse(&selector.to_string()).as_ref(),
                Ok(selector)
            );
        }
    }
});
