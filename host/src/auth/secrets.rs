//! Random secrets and their stored form: 32 random bytes as hex; stored as SHA-256 hex (the
//! secrets are high-entropy, so a fast hash is enough to make a stolen database useless).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn generate() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn equal(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_random_and_digests_stable() {
        let (a, b) = (super::generate(), super::generate());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(super::digest("x"), super::digest("x"));
        assert!(super::equal(&super::digest("x"), &super::digest("x")));
        assert!(!super::equal(&super::digest("x"), &super::digest("y")));
    }
}
