//! Sizes and durations as people type and read them, so every command reads and writes them
//! alike: `parse-size` parses sizes, `indicatif`'s formatters print them (the crate also draws
//! the upload progress bar), `humantime` prints durations. Raw numbers stay in `--json`.

use std::time::Duration;

use indicatif::{BinaryBytes, DecimalBytes};
use parse_size::Config;

/// K, M, G, T count powers of 1000, as disks are sold; KiB, MiB, GiB, TiB powers of 1024.
const DECIMAL: Config = Config::new();
/// K, M, G, T count powers of 1024 too.
const BINARY: Config = Config::new().with_binary();

/// A byte count such as `16TB` (16×10^12), `16TiB` (16×2^40), `1.5G`, `4096` or `1e9`. A
/// trailing `/s` is accepted so that rates read naturally (`200MB/s`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    DECIMAL
        .parse_size(trimmed.strip_suffix("/s").unwrap_or(trimmed))
        .map_err(|e| format!("{text:?}: {e}; expected a size such as 16TB, 16TiB or 200MB/s"))
}

/// A byte count where `K`, `M`, `G`, `T` (with or without `B`) are powers of 1024, as
/// `rebalance --max-bytes` has always read them: `500G` is 500 GiB.
pub fn parse_binary_size(text: &str) -> Result<u64, String> {
    BINARY
        .parse_size(text.trim())
        .map_err(|e| format!("{text:?}: {e}; expected a size such as 500G or 2TiB"))
}

/// `2.95 TiB`: sizes in a cluster, in the units `df -h` uses.
pub fn bytes(n: u64) -> String {
    BinaryBytes(n).to_string()
}

/// `20.00 MiB/s`.
pub fn bytes_per_sec(rate: f64) -> String {
    // `as` saturates: a negative or NaN rate (none is expected) reads as 0.
    format!("{}/s", bytes(rate.round() as u64))
}

/// `16.00 TB`: the durability model's figures, in the decimal units disks are sold in. A
/// fraction of a byte (expected losses per year can be tiny) keeps its magnitude.
pub fn decimal_bytes(n: f64) -> String {
    if n > 0.0 && n < 1.0 {
        format!("{n:.2e} B")
    } else if n.is_finite() {
        DecimalBytes(n.round() as u64).to_string()
    } else {
        format!("{n} B")
    }
}

/// Milliseconds since the Unix epoch, now (the metadata types' clock, one for the whole binary).
pub use bitmountain_meta::types::now_unix_ms;

/// `2026-12-05T08:10:27Z`: a time in Unix milliseconds, to the second (UTC).
pub fn time(unix_ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `2h 30m 12s` to the second; below a second, `250ms` (a heartbeat's age).
pub fn duration(d: Duration) -> String {
    let rounded = if d.as_secs() == 0 {
        Duration::from_millis(d.subsec_millis().into())
    } else {
        Duration::from_secs(d.as_secs() + u64::from(d.subsec_millis() >= 500))
    };
    humantime::format_duration(rounded).to_string()
}

/// [`duration`] of a model's seconds, which may be infinite.
pub fn duration_secs(secs: f64) -> String {
    Duration::try_from_secs_f64(secs).map_or_else(|_| "infinite".to_string(), duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_decimal_and_binary_units() {
        assert_eq!(parse_size("16TB"), Ok(16_000_000_000_000));
        assert_eq!(parse_size("16TiB"), Ok(16 << 40));
        assert_eq!(parse_size("16 tb"), Ok(16_000_000_000_000));
        assert_eq!(parse_size("200MB/s"), Ok(200_000_000));
        assert_eq!(parse_size("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_size("1_000"), Ok(1000));
        for bad in ["16XB", "", "-5GB", "/s", "x"] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn binary_sizes_count_powers_of_1024() {
        assert_eq!(parse_binary_size("123"), Ok(123));
        assert_eq!(parse_binary_size("4K"), Ok(4096));
        assert_eq!(parse_binary_size("100M"), Ok(100 << 20));
        assert_eq!(parse_binary_size("5MB"), Ok(5 << 20));
        assert_eq!(parse_binary_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_binary_size("1t"), Ok(1 << 40));
        assert_eq!(parse_binary_size("1.5K"), Ok(1536));
        for bad in ["x", "5Q", "99999999999T", "-1"] {
            assert!(parse_binary_size(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn errors_name_the_input() {
        let e = parse_size("16XB");
        assert!(
            matches!(&e, Err(e) if e.contains("\"16XB\"") && e.contains("16TiB")),
            "{e:?}"
        );
    }

    #[test]
    fn sizes_print_in_human_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3_246_638_088_192), "2.95 TiB");
        assert_eq!(bytes_per_sec(20.0 * 1024.0 * 1024.0), "20.00 MiB/s");
        assert_eq!(decimal_bytes(16e12), "16.00 TB");
        assert_eq!(decimal_bytes(0.0), "0 B");
        assert_eq!(decimal_bytes(0.000_123), "1.23e-4 B");
    }

    #[test]
    fn durations_print_in_human_units() {
        assert_eq!(duration(Duration::from_micros(250_400)), "250ms");
        assert_eq!(duration(Duration::from_secs(1800)), "30m");
        assert_eq!(duration(Duration::from_millis(61_500)), "1m 2s");
        assert_eq!(duration_secs(9000.4), "2h 30m");
        assert_eq!(duration_secs(f64::INFINITY), "infinite");
    }
}
