//! The envelope decoder on arbitrary bytes: it never panics; it says what decoding the
//! whole object as a map and splitting it says (the same event, or the same error with
//! the same routing and words); and what it accepts survives a round trip through its
//! own JSON form unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordo_core::{parse_event, parse_object, OpPolicy};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    for policy in [OpPolicy::Document, OpPolicy::Custom] {
        let parsed = parse_event(data, policy);
        if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(data) {
            if data.len() <= ordo_core::limits::EVENT_BYTES_MAX {
                let via_map = parse_object(object, policy);
                assert_eq!(format!("{parsed:?}"), format!("{via_map:?}"));
            }
        }
        let Ok(event) = parsed else {
            continue;
        };
        let again = parse_event(event.to_json_string().as_bytes(), policy)
            .expect("an accepted event's own JSON parses");
        assert_eq!(again, event, "round trip changed the event");
    }
});
