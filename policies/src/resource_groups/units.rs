//! The value formats of Trino's resource-groups.json: data sizes (`10GB`), memory limits (a size
//! or a percentage such as `50%`) and durations (`1h`, `30m`, `10s`), as airlift writes them.

use std::time::Duration;

/// A group's `softMemoryLimit`: an absolute size, or a share of the memory of the cluster (pool).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryLimit {
    /// An absolute number of bytes (`10GB`).
    Bytes(u64),
    /// A fraction in `0.0..=1.0` of the cluster's memory (`50%` is `0.5`).
    Fraction(f64),
}

impl MemoryLimit {
    /// Parses `10GB`, `512MB`, `1.5TB`, `100B` or `37.5%`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if let Some(number) = trimmed.strip_suffix('%') {
            let percent = parse_decimal(number).ok_or_else(|| format!("'{text}' is not a percentage like '50%'"))?;
            if percent > 100.0 {
                return Err(format!("'{text}' is more than 100%"));
            }
            return Ok(MemoryLimit::Fraction(percent / 100.0));
        }
        parse_data_size(trimmed).map(MemoryLimit::Bytes)
    }

    /// The limit in bytes, a fraction resolved against `cluster_memory_bytes`.
    pub fn resolve(&self, cluster_memory_bytes: u64) -> u64 {
        match *self {
            MemoryLimit::Bytes(bytes) => bytes,
            // Fractions are in 0..=1, so the product fits; `as` saturates on the way back.
            MemoryLimit::Fraction(fraction) => (cluster_memory_bytes as f64 * fraction).floor() as u64,
        }
    }
}

/// Parses an airlift data size: a decimal number and a unit `B`, `kB`, `MB`, `GB`, `TB`, `PB`
/// (powers of 1024; unit letters are accepted in any case).
pub fn parse_data_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number_unit(text).ok_or_else(|| format!("'{text}' is not a data size like '10GB'"))?;
    let multiplier: u64 = match unit.to_ascii_uppercase().as_str() {
        "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        "PB" => 1 << 50,
        _ => return Err(format!("'{text}': unknown data size unit '{unit}' (use B, kB, MB, GB, TB or PB)")),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("'{text}' is too large"));
    }
    Ok(bytes.round() as u64)
}

/// Parses an airlift duration: a decimal number and a unit `ns`, `us`, `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) =
        split_number_unit(text).ok_or_else(|| format!("'{text}' is not a duration like '1h' or '30s'"))?;
    let seconds_per_unit = match unit {
        "ns" => 1e-9,
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(format!("'{text}': unknown duration unit '{unit}' (use ns, us, ms, s, m, h or d)")),
    };
    Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| format!("'{text}' is out of range"))
}

/// Formats bytes the way airlift prints a succinct data size: the largest unit that divides it.
pub fn format_data_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 5] = [("PB", 50), ("TB", 40), ("GB", 30), ("MB", 20), ("kB", 10)];
    for (unit, shift) in UNITS {
        let size = 1u64 << shift;
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// Formats a duration as airlift does in Trino's REST answers (`1500.00ms`).
pub fn format_duration(duration: Duration) -> String {
    format!("{:.2}ms", duration.as_secs_f64() * 1000.0)
}

/// Splits `12.5GB` into (12.5, "GB"); whitespace between is allowed, nothing else.
fn split_number_unit(text: &str) -> Option<(f64, &str)> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let unit = unit.trim_start();
    if unit.is_empty() || !unit.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    Some((parse_decimal(number)?, unit))
}

/// A non-negative decimal `12` or `12.5` (no sign, exponent, `inf` or `NaN`).
fn parse_decimal(text: &str) -> Option<f64> {
    let valid = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.matches('.').count() <= 1
        && !text.starts_with('.')
        && !text.ends_with('.');
    if valid { text.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_percentages_and_durations_parse() {
        assert_eq!(MemoryLimit::parse("10GB"), Ok(MemoryLimit::Bytes(10 << 30)));
        assert_eq!(MemoryLimit::parse("512MB"), Ok(MemoryLimit::Bytes(512 << 20)));
        assert_eq!(MemoryLimit::parse("1.5kB"), Ok(MemoryLimit::Bytes(1536)));
        assert_eq!(MemoryLimit::parse("50%"), Ok(MemoryLimit::Fraction(0.5)));
        assert_eq!(MemoryLimit::parse("12.5%").map(|m| m.resolve(800)), Ok(100));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn malformed_values_are_rejected_with_the_value_in_the_message() {
        for bad in ["", "GB", "10", "10XB", "-1GB", "1..2GB", "1e3GB", "10 G B"] {
            let err = MemoryLimit::parse(bad).expect_err(bad);
            assert!(err.contains(bad.trim()), "{err}");
        }
        assert!(MemoryLimit::parse("101%").is_err());
        assert!(MemoryLimit::parse("abc%").is_err());
        for bad in ["", "1", "1x", "-1s", "1 hour", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_data_size("99999999999999PB").is_err());
    }

    #[test]
    fn sizes_and_durations_print_as_airlift_does() {
        assert_eq!(format_data_size(10 << 30), "10GB");
        assert_eq!(format_data_size(1536), "1536B");
        assert_eq!(format_data_size(0), "0B");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500.00ms");
    }
}
