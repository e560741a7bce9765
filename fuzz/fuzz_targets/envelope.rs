//! The envelope decoder on arbitrary bytes: it never panics, and what it accepts
//! survives a round trip through its own JSON form unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordo_core::{parse_event, OpPolicy};

fuzz_target!(|data: &[u8]| {
    for policy in [OpPolicy::Document, OpPolicy::Custom] {
        let Ok(event) = parse_event(data, policy) else {
            continue;
        };
        let again = parse_event(event.to_json_string().as_bytes(), policy)
            .expect("an accepted event's own JSON parses");
        assert_eq!(again, event, "round trip changed the event");
    }
});
