//! Human sizes as users write them: `4G`, `512M`, `10Gi`, `2048` (bytes).
//!
//! The original init container passed `IMAGE_SIZE` straight to `resize2fs`,
//! whose suffixes are binary (K = KiB, M = MiB, G = GiB). We keep that meaning
//! and also accept Kubernetes-style `Ki`/`Mi`/`Gi`/`Ti` and an optional `B`.

use std::fmt;
use std::str::FromStr;

/// A number of bytes parsed from a human size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// Why a size string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("empty size; write a number with an optional unit, e.g. 4G or 512M")]
    Empty,
    #[error(
        "invalid size {0:?}; write a number with an optional unit K, M, G or T (binary), e.g. 4G or 512M"
    )]
    Invalid(String),
    #[error("size {0:?} is too large")]
    Overflow(String),
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err(SizeError::Empty);
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(SizeError::Invalid(s.to_string()));
        }
        let n: u64 = num
            .parse()
            .map_err(|_| SizeError::Overflow(s.to_string()))?;
        let shift = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KB" | "KI" | "KIB" => 10,
            "M" | "MB" | "MI" | "MIB" => 20,
            "G" | "GB" | "GI" | "GIB" => 30,
            "T" | "TB" | "TI" | "TIB" => 40,
            _ => return Err(SizeError::Invalid(s.to_string())),
        };
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| SizeError::Overflow(s.to_string()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human(self.0))
    }
}

/// Formats a byte count for people: `1.5 GiB`, `700.0 MiB`, `12 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_original_syntax_and_kubernetes_units() {
        assert_eq!("4G".parse(), Ok(ByteSize(4 << 30)));
        assert_eq!("512M".parse(), Ok(ByteSize(512 << 20)));
        assert_eq!("10Gi".parse(), Ok(ByteSize(10 << 30)));
        assert_eq!("2048".parse(), Ok(ByteSize(2048)));
        assert_eq!(" 1k ".parse(), Ok(ByteSize(1024)));
    }

    #[test]
    fn refuses_garbage_with_a_reason() {
        assert_eq!("".parse::<ByteSize>(), Err(SizeError::Empty));
        assert!(matches!(
            "4X".parse::<ByteSize>(),
            Err(SizeError::Invalid(_))
        ));
        assert!(matches!(
            "G".parse::<ByteSize>(),
            Err(SizeError::Invalid(_))
        ));
        assert!(matches!(
            "-1G".parse::<ByteSize>(),
            Err(SizeError::Invalid(_))
        ));
        assert!(matches!(
            "99999999999T".parse::<ByteSize>(),
            Err(SizeError::Overflow(_))
        ));
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(1536 << 20), "1.5 GiB");
    }
}
