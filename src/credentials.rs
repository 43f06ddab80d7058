//! Making credentials: argon2id password hashes (`hash-password`) and API keys with their
//! `sha256:` hash (`gen-api-key`). Keys carry 256 bits of entropy from the OS RNG.

use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use base64::Engine;
use sha2::{Digest, Sha256};

/// Why a password could not be hashed. The text never contains the password.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The argon2 parameters are out of range.
    #[error("invalid argon2 parameters: {0}")]
    Params(#[source] argon2::Error),
    /// argon2 refused to hash.
    #[error("hashing failed: {0}")]
    Hashing(#[source] argon2::password_hash::Error),
}

/// Hashes a password with argon2id (OWASP defaults: m=19456 KiB, t=2, p=1).
pub fn hash_password(
    password: &str,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
) -> Result<String, HashError> {
    let params = Params::new(m_cost, t_cost, p_cost, None).map_err(HashError::Params)?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(HashError::Hashing)
}

/// `sha256:<hex>` of a key, as stored in the config.
pub fn api_key_hash(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// A new key `PREFIX_<43 base64url chars>` (256 random bits) and its hash line.
pub fn new_api_key(prefix: &str) -> (String, String) {
    let mut raw = [0u8; 32];
    rand::fill(&mut raw);
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let key = if prefix.is_empty() {
        body
    } else {
        format!("{prefix}_{body}")
    };
    let hash = api_key_hash(&key);
    (key, hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    #[test]
    fn hashes_verify() {
        let h = hash_password("correct horse", 1024, 1, 1).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        let parsed = argon2::PasswordHash::new(&h).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong", &parsed)
                .is_err()
        );
    }

    #[test]
    fn keys_are_long_and_unique() {
        let (a, ha) = new_api_key("pk");
        let (b, _) = new_api_key("pk");
        assert!(a.starts_with("pk_") && a.len() == 3 + 43);
        assert_ne!(a, b);
        assert_eq!(ha, api_key_hash(&a));
        assert_eq!(ha.len(), 7 + 64);
    }

    #[test]
    fn refuses_out_of_range_parameters() {
        let e = hash_password("correct horse", 1, 1, 1)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid argon2 parameters: "), "{e}");
        assert!(!e.contains("correct horse"));
    }
}
