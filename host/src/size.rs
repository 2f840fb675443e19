//! Byte sizes as people write them: `65536`, `64KiB`, `64MiB`, `1GiB`,
//! `512M` (K/M/G are binary, as in docker), `10MB` (decimal). Used by the
//! command line and by annotations.
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
