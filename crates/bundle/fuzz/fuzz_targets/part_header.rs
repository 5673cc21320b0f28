//! MIME part and message header parsers on arbitrary header blocks.
#![no_main]

use bitmountain_bundle::mime::{parse_message_header, parse_part_headers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_part_headers(data, "fuzz");
    let _ = parse_message_header(data);
});
