//! Device secrets: generated, hashed with Argon2id, verified.
//!
//! Hash parameters: Argon2id with 8 MiB of memory, 1 pass and 1 lane ([`PARAMS`]). A
//! verification then takes about 3 ms on one core of the 2-core reference machine (release
//! build; 4 MiB took 1.8 ms, OWASP's 19 MiB × 2 passes 14 ms), so each core admits about 300
//! connecting devices a second and a fleet of thousands reconnects within seconds.
//! These are lighter than the settings advised for human passwords on purpose: device secrets
//! are long random strings (generated ones have about 190 bits) or at least
//! [`MIN_SECRET_LEN`] characters, so their entropy, not the cost of the hash, is what defeats
//! guessing; the hash keeps the devices file from being a list of usable credentials. Every
//! stored hash is a PHC string that records its own parameters and salt, so changing [`PARAMS`]
//! later keeps existing hashes verifiable.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng;
use rand::distr::Alphanumeric;

use super::error::RegistryError;

/// Shortest secret accepted.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted.
pub const MAX_SECRET_LEN: usize = 256;
/// Length of a generated secret (letters and digits, about 190 bits).
const GENERATED_LEN: usize = 32;
/// Memory cost in KiB, passes and lanes of every new hash.
const PARAMS: (u32, u32, u32) = (8 * 1024, 1, 1);

/// A new random secret of letters and digits.
pub fn generate() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(GENERATED_LEN)
        .map(char::from)
        .collect()
}

/// Checks that `secret` has an accepted length.
pub fn check(secret: &str) -> Result<(), RegistryError> {
    let len = secret.chars().count();
    if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len) {
        Ok(())
    } else {
        Err(RegistryError::SecretLength { len })
    }
}

/// The Argon2id hash of `secret` with a fresh random salt, as a PHC string.
pub fn hash(secret: &str) -> Result<String, RegistryError> {
    check(secret)?;
    let salt: [u8; 16] = rand::rng().random();
    let salt = SaltString::encode_b64(&salt).map_err(|e| RegistryError::Hash(e.to_string()))?;
    hasher()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| RegistryError::Hash(e.to_string()))
}

/// Whether `secret` matches the PHC string `stored`; a malformed `stored` matches nothing.
pub fn verify(secret: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok()
    })
}

/// The secret kept in the file at `path`, or a new one written there (readable by its owner
/// only) when the file does not exist yet.
pub fn stored_or_generated(path: &Path) -> Result<String, RegistryError> {
    let io = |action| {
        move |source| RegistryError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    match fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim().to_string();
            check(&secret).map(|()| secret)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io("create"))?;
            }
            let secret = generate();
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io("create"))?;
            file.write_all(format!("{secret}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io("write"))?;
            Ok(secret)
        }
        Err(e) => Err(io("read")(e)),
    }
}

fn hasher() -> Argon2<'static> {
    let (memory_kib, passes, lanes) = PARAMS;
    let params = Params::new(memory_kib, passes, lanes, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_secret_only_and_never_contains_it() {
        let secret = generate();
        assert_eq!(secret.len(), GENERATED_LEN);
        let stored = hash(&secret).unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"),
            "{stored}"
        );
        assert!(!stored.contains(&secret));
        assert!(verify(&secret, &stored));
        assert!(!verify(&generate(), &stored));
        assert!(!verify(&secret, "not a PHC string"));
    }

    #[test]
    fn the_same_secret_hashes_differently_each_time() {
        let secret = "the-same-secret-twice";
        assert_ne!(hash(secret).unwrap(), hash(secret).unwrap());
    }

    #[test]
    fn short_and_long_secrets_are_refused() {
        for len in [0, MIN_SECRET_LEN - 1, MAX_SECRET_LEN + 1] {
            let err = hash(&"s".repeat(len)).unwrap_err().to_string();
            assert!(err.contains("16 to 256 characters"), "{err}");
        }
    }

    #[test]
    fn a_stored_secret_is_generated_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/demo-secret");
        let first = stored_or_generated(&path).unwrap();
        assert_eq!(stored_or_generated(&path).unwrap(), first);
        let mode = fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
