//! OpenSSH keys for VPS sessions (ed25519 only): a key pair made for a user (`generate`
//! mode), a host key for a container's sshd, and the check a caller's public key passes
//! before it is written into a container. Pure computation, no `ssh-keygen` process.

use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey};

/// Longest public key line accepted (an RSA-16384 key is about 2.8 KiB).
pub const MAX_PUBLIC_KEY_LEN: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not an OpenSSH public key line ('ssh-ed25519 AAAA... comment'): {0}")]
    Malformed(String),
    #[error("longer than {MAX_PUBLIC_KEY_LEN} bytes")]
    TooLong,
    #[error("cannot make a key: {0}")]
    Generate(String),
}

/// A key pair in OpenSSH text form.
#[derive(Clone)]
pub struct KeyPair {
    /// `-----BEGIN OPENSSH PRIVATE KEY-----` ... (unencrypted).
    pub private_openssh: String,
    /// One `ssh-ed25519 AAAA... comment` line.
    pub public_openssh: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private half.
        f.debug_struct("KeyPair")
            .field("public_openssh", &self.public_openssh)
            .finish_non_exhaustive()
    }
}

/// A new ed25519 key pair with `comment`, from the operating system's random source.
pub fn generate_ed25519(comment: &str) -> Result<KeyPair, KeyError> {
    let mut key = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    key.set_comment(comment);
    let private_openssh = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| KeyError::Generate(e.to_string()))?
        .to_string();
    let public_openssh = key
        .public_key()
        .to_openssh()
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok(KeyPair {
        private_openssh,
        public_openssh,
    })
}

/// Checks one public key line and returns it re-encoded (so what reaches a container's
/// `authorized_keys` is exactly one well-formed line: no options, no second line).
pub fn check_public_key(text: &str) -> Result<String, KeyError> {
    if text.len() > MAX_PUBLIC_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    let line = text.trim();
    if line.contains('\n') || line.contains('\r') {
        return Err(KeyError::Malformed("exactly one line expected".into()));
    }
    let key = PublicKey::from_openssh(line).map_err(|e| KeyError::Malformed(e.to_string()))?;
    key.to_openssh()
        .map_err(|e| KeyError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_round_trips_and_its_public_half_passes_the_check() {
        let pair = generate_ed25519("kohakuriver-vps-1").unwrap();
        assert!(pair
            .private_openssh
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(pair.public_openssh.starts_with("ssh-ed25519 AAAA"));
        assert!(pair.public_openssh.ends_with(" kohakuriver-vps-1"));
        let back = PrivateKey::from_openssh(&pair.private_openssh).unwrap();
        assert_eq!(back.public_key().to_openssh().unwrap(), pair.public_openssh);
        assert_eq!(
            check_public_key(&format!("  {}\n", pair.public_openssh)).unwrap(),
            pair.public_openssh
        );
        assert!(!format!("{pair:?}").contains("PRIVATE"));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = generate_ed25519("x").unwrap().public_openssh;
        for bad in [
            "",
            "hello",
            "ssh-ed25519 notbase64!!",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB",
            &format!("command=\"rm -rf /\" {good}"),
            &format!("{good}\n{good}"),
        ] {
            assert!(check_public_key(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_public_key(&"a".repeat(MAX_PUBLIC_KEY_LEN + 1)),
            Err(KeyError::TooLong)
        );
    }
}
