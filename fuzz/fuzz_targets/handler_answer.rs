//! The handler-answer parsers on arbitrary input: an `exec:` child's answer line, and an
//! HTTP status, body and `Retry-After`. They never panic, and every reason they give is
//! clipped to the contract's bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordo_runtime::handler::fuzzing::{exec_answer, http_answer};
use ordo_runtime::handler::{Answer, REASON_BYTES_MAX};

/// The clip adds one ellipsis (3 bytes) to at most `REASON_BYTES_MAX` bytes.
const CLIPPED_BYTES_MAX: usize = REASON_BYTES_MAX + 3;

fn reason(answer: &Answer) -> &str {
    match answer {
        Answer::Applied => "",
        Answer::Rejected { reason } | Answer::Retry { reason, .. } => reason,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match exec_answer(&text) {
        Ok((_, answer)) => assert!(reason(&answer).len() <= CLIPPED_BYTES_MAX),
        Err(why) => assert!(why.len() <= CLIPPED_BYTES_MAX, "unclipped: {}", why.len()),
    }
    if data.len() >= 2 {
        let status = u16::from_le_bytes([data[0], data[1]]);
        let rest = String::from_utf8_lossy(&data[2..]);
        let (body, retry_after) = rest.split_once('\n').unwrap_or((&rest, ""));
        if let Some(answer) = http_answer(status, body, retry_after) {
            assert!(reason(&answer).len() <= CLIPPED_BYTES_MAX);
            let success = (200..300).contains(&status);
            assert_eq!(success, answer == Answer::Applied, "status {status}");
        }
    }
});
