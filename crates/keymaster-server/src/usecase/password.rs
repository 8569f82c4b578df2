//! A policy's password: hashed with argon2id at deposit, checked at retrieval, both off the
//! async threads; checks are bounded ([`ARGON2_AT_ONCE`]) so that a flood of guesses cannot
//! take every core.

use argon2::{Algorithm, Argon2, Params, Version};
use keymaster_core::policy::PasswordCheck;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::error::ApiError;

/// argon2id with OWASP's minimum parameters (19 MiB, 2 passes, 1 lane).
pub fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// argon2id runs at most this many at once (19 MiB and a few tens of milliseconds each), so
/// that a flood of password guesses cannot take every core or much memory; the rest wait.
const ARGON2_AT_ONCE: usize = 4;
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(ARGON2_AT_ONCE);

/// Hashes a policy password with argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    let password = Zeroizing::new(password);
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::generate(&mut OsRng);
        argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(format!("argon2: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("argon2 task: {e}")))?
}

/// Checks a policy password against its stored hash, off the async threads, at most
/// [`ARGON2_AT_ONCE`] at a time.
pub async fn verify_password(given: String, hash: String) -> Result<PasswordCheck, ApiError> {
    let given = Zeroizing::new(given);
    let _slot = ARGON2_SLOTS
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(format!("argon2 slots: {e}")))?;
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| ApiError::Internal(format!("stored password hash: {e}")))?;
        Ok(match argon2().verify_password(given.as_bytes(), &parsed) {
            Ok(()) => PasswordCheck::Correct,
            Err(_) => PasswordCheck::Incorrect,
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("argon2 task: {e}")))?
}
