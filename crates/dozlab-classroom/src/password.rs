//! Strong generated passwords for VS Code and the terminal.

use base64::Engine as _;
use rand::RngCore as _;

/// Random bytes per password: 24 bytes = 192 bits of entropy.
const PASSWORD_BYTES: usize = 24;

/// A new password: 192 random bits from the thread's CSPRNG (seeded by the
/// OS), as 32 URL-safe base64 characters (no quoting needed in YAML or CSV).
pub fn generate() -> String {
    let mut bytes = [0u8; PASSWORD_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn passwords_are_long_distinct_and_plain() {
        let all: HashSet<String> = (0..200).map(|_| generate()).collect();
        assert_eq!(all.len(), 200);
        for p in &all {
            assert_eq!(p.len(), 32);
            assert!(
                p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            );
        }
    }
}
