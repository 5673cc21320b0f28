//! Sizes with units (16TB, 16TiB, 200MB/s) and human-readable formatting of the results.

use crate::error::{DurabilityError, Result};

/// Seconds in a (365-day) year: AFR is failures per disk-year, and Backblaze's method uses 365.
pub const SECS_PER_YEAR: f64 = 365.0 * 24.0 * 3600.0;

/// Parses a byte count such as `16TB` (10^12, as disk vendors count), `16TiB` (2^40), `500G`,
/// `1.5e12` or `200MB/s` (a trailing `/s` is accepted so rates read naturally). `what` names the
/// input in the error.
pub fn parse_bytes(what: &'static str, text: &str) -> Result<u64> {
    let bad = || DurabilityError::BadSize {
        what,
        value: text.to_string(),
    };
    let trimmed = text.trim();
    let trimmed = trimmed.strip_suffix("/s").unwrap_or(trimmed).trim();
    // The number is the longest prefix that looks numeric; the rest is the unit.
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '_'))
        .unwrap_or(trimmed.len());
    // "1e3" is a number, but "16e" is not: let a trailing 'e'/'E' belong to no unit we know.
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number.replace('_', "").parse().map_err(|_| bad())?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "p" | "pb" => 1e15,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "pib" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// `1.23 TB`-style decimal formatting (the units disks are sold in).
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];
    if !bytes.is_finite() {
        return format!("{bytes}");
    }
    let mut value = bytes;
    let mut unit = 0;
    while value.abs() >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 && value != 0.0 && value.abs() < 1.0 {
        // Expected losses can be tiny fractions of a byte per year; keep their magnitude.
        format!("{value:.2e} B")
    } else if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.3} {}", UNITS[unit])
            .replace(".000 ", " ")
            .to_string()
    }
}

/// A duration in the largest unit that keeps the number readable.
pub fn format_secs(secs: f64) -> String {
    if !secs.is_finite() {
        return "infinite".to_string();
    }
    let years = secs / SECS_PER_YEAR;
    if years >= 1.0 {
        return format!("{} years", format_sci(years));
    }
    if secs >= 86_400.0 {
        format!("{:.1} days", secs / 86_400.0)
    } else if secs >= 3_600.0 {
        format!("{:.1} h", secs / 3_600.0)
    } else if secs >= 60.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{secs:.1} s")
    }
}

/// Plain for ordinary numbers, scientific for very small or very large ones.
pub fn format_sci(value: f64) -> String {
    if value == 0.0 {
        "0".to_string()
    } else if !value.is_finite() {
        format!("{value}")
    } else if (1e3..1e6).contains(&value.abs()) {
        format!("{value:.0}")
    } else if (1e-3..1e3).contains(&value.abs()) {
        let s = format!("{value:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{value:.3e}")
    }
}

/// Number of leading nines of `1 - p` (the "durability nines" vendors quote).
pub fn nines(p_loss: f64) -> u32 {
    if p_loss <= 0.0 {
        return u32::MAX;
    }
    if p_loss >= 1.0 {
        return 0;
    }
    // 1 - p = 0.999..9x has n nines when p < 10^-n; floor(-log10 p) counts them.
    (-p_loss.log10()).floor().max(0.0) as u32
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_decimal_and_binary_units() {
        assert_eq!(parse_bytes("x", "16TB").unwrap(), 16_000_000_000_000);
        assert_eq!(parse_bytes("x", "16TiB").unwrap(), 16 * (1u64 << 40));
        assert_eq!(parse_bytes("x", "16 tb").unwrap(), 16_000_000_000_000);
        assert_eq!(parse_bytes("x", "200MB/s").unwrap(), 200_000_000);
        assert_eq!(parse_bytes("x", "1.5G").unwrap(), 1_500_000_000);
        assert_eq!(parse_bytes("x", "4096").unwrap(), 4096);
        assert_eq!(parse_bytes("x", "1e9").unwrap(), 1_000_000_000);
        assert!(parse_bytes("x", "16XB").is_err());
        assert!(parse_bytes("x", "").is_err());
        assert!(parse_bytes("x", "-5GB").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_bytes(16e12), "16 TB");
        assert_eq!(format_bytes(1.4e15), "1.400 PB");
        assert_eq!(nines(7.354e-12), 11);
        assert_eq!(nines(0.5), 0);
        assert_eq!(format_secs(7200.0), "2.0 h");
    }
}
