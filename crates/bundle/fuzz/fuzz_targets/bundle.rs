//! A whole bundle from arbitrary bytes: open, verify and read every file without panicking.
#![no_main]

use bitmountain_bundle::BundleReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(reader) = BundleReader::open(data) {
        let _ = reader.verify();
        for entry in reader.index().entries().to_vec() {
            let _ = reader.copy_entry(&entry, &mut std::io::sink());
        }
    }
});
