//! Byte sizes on the command line: `65536`, `64KiB`, `64MiB`, `1GiB`,
//! `512M` (K/M/G are binary, as in docker), `10MB` (decimal).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SizeError(String);

pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| SizeError(format!("{s:?} is not a size; use e.g. 64MiB, 512M or 1GiB")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(SizeError(format!("{s:?} has an unknown unit; use B, KiB, MiB, GiB (or K, M, G)"))),
    };
    let bytes = num * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(SizeError(format!("{s:?} is out of range")));
    }
    Ok(bytes as u64)
}

/// A size for people: `812 B`, `1.4 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(human(812), "812 B");
        assert_eq!(human(3 << 19), "1.5 MiB");
        for bad in ["", "abc", "12XB", "0", "-5M"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
