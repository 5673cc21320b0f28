//! The trailer parser: anything it accepts re-encodes to the same bytes.
#![no_main]

use bitmountain_bundle::Trailer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(trailer) = Trailer::decode(data) {
        assert_eq!(&trailer.encode()[..], data);
    }
});
