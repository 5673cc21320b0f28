//! Human-readable formatting of the model's results (the plot's title among them). Parsing the
//! sizes people type is the binary's business.

/// Seconds in a (365-day) year: AFR is failures per disk-year, and Backblaze's method uses 365.
pub const SECS_PER_YEAR: f64 = 365.0 * 24.0 * 3600.0;

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
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format_bytes(16e12), "16 TB");
        assert_eq!(format_bytes(1.4e15), "1.400 PB");
        assert_eq!(nines(7.354e-12), 11);
        assert_eq!(nines(0.5), 0);
    }
}
