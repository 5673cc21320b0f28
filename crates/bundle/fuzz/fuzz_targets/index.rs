//! The index parser must reject or accept any bytes without panicking, and what it accepts must
//! re-encode to the same bytes.
#![no_main]

use bitmountain_bundle::Index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = Index::decode(data, u64::MAX) {
        assert_eq!(index.encode(), data, "an accepted index must re-encode identically");
    }
});
