//! Server-side cryptography: the keys derived from the server secret, code HMACs, token hashes,
//! encryption at rest, fresh tokens and ids.
//!
//! One server secret; HKDF-SHA-256 derives an independent key per purpose so that no key is used
//! for two jobs. Not responsible for key material of devices (that is `keymaster_core::key`).

use std::fs;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Length of the encryption key id prefix of every sealed blob.
pub const KEY_ID_LEN: usize = 4;
/// XChaCha20-Poly1305 nonce length: random nonces are safe at this size.
const NONCE_LEN: usize = 24;

/// The keys derived from the server secret (`secret`), and those of the secrets it replaced
/// (`previous_secrets`), which are only ever used to read.
pub struct Keys {
    /// Everything new is hashed and sealed with these.
    current: SecretKeys,
    /// Newest first. Empty unless a rotation is under way, and then only looked at when the
    /// current keys did not fit.
    previous: Vec<SecretKeys>,
}

/// The purpose keys of one server secret.
struct SecretKeys {
    /// HMAC-SHA-256 for codes, keyed once: each code's HMAC starts from a copy of this state
    /// instead of hashing the key's inner and outer pads again (two of the four SHA-256 blocks
    /// of a code's HMAC). The state is as secret as the key it was made from and lives as long.
    code_mac: Hmac<Sha256>,
    /// AEAD key for secrets stored at rest.
    aead: XChaCha20Poly1305,
    /// Names the AEAD key in every blob (the first bytes of SHA-256 over the key), so that a
    /// blob is opened with the key that sealed it after a rotation.
    aead_id: [u8; KEY_ID_LEN],
}

/// Why the server secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret file could not be read or written.
    #[error("server secret file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The secret is too short to be a secret.
    #[error("server secret in {0} is shorter than 32 characters")]
    TooShort(String),
}

/// Reads the secret from `path`, or makes a new random one there (mode 0600) when absent. An
/// existing file that others can read is tightened first (see [`crate::private_files`]).
pub fn load_or_create_secret_file(path: &Path) -> Result<Zeroizing<String>, SecretError> {
    let io = |source| SecretError::Io {
        path: path.display().to_string(),
        source,
    };
    crate::private_files::restrict(path, "server secret file").map_err(io)?;
    match fs::read_to_string(path) {
        Ok(s) => {
            let s = Zeroizing::new(s.trim().to_owned());
            if s.len() < 32 {
                return Err(SecretError::TooShort(path.display().to_string()));
            }
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = Zeroizing::new([0u8; 32]);
            OsRng.fill_bytes(raw.as_mut());
            let secret = Zeroizing::new(hex::encode(raw.as_ref()));
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(path).map_err(io)?;
            f.write_all(secret.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(secret)
        }
        Err(e) => Err(io(e)),
    }
}

impl SecretKeys {
    fn derive(secret: &[u8]) -> SecretKeys {
        let hk = Hkdf::<Sha256>::new(Some(b"keymaster v1"), secret);
        let mut code_hmac = Zeroizing::new([0u8; 32]);
        let mut aead_key = Zeroizing::new([0u8; 32]);
        // HKDF-SHA-256 can expand up to 8160 bytes; 32 is always within range.
        let _ = hk.expand(b"code-hmac", code_hmac.as_mut());
        let _ = hk.expand(b"aead-at-rest", aead_key.as_mut());
        let digest = Sha256::digest(aead_key.as_ref());
        let mut aead_id = [0u8; KEY_ID_LEN];
        aead_id.copy_from_slice(&digest[..KEY_ID_LEN]);
        // HMAC accepts keys of any length; this cannot fail.
        let code_mac = match <Hmac<Sha256> as Mac>::new_from_slice(code_hmac.as_ref()) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        };
        SecretKeys {
            code_mac,
            aead: XChaCha20Poly1305::new(aead_key.as_ref().into()),
            aead_id,
        }
    }

    fn code_hash(&self, normalised_code: &str) -> Vec<u8> {
        let mut mac = self.code_mac.clone();
        mac.update(normalised_code.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn open(&self, blob: &[u8], context: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if blob.len() < KEY_ID_LEN + NONCE_LEN || blob[..KEY_ID_LEN] != self.aead_id {
            return None;
        }
        let nonce = XNonce::from_slice(&blob[KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN]);
        self.aead
            .decrypt(
                nonce,
                Payload {
                    msg: &blob[KEY_ID_LEN + NONCE_LEN..],
                    aad: context,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

impl Keys {
    /// Derives every purpose key from the server secret.
    pub fn derive(secret: &[u8]) -> Keys {
        Keys::derive_rotating(secret, &[])
    }

    /// Derives the keys of `secret` and, for reading what was made before a rotation, those of
    /// `previous` (newest first).
    pub fn derive_rotating(secret: &[u8], previous: &[&[u8]]) -> Keys {
        Keys {
            current: SecretKeys::derive(secret),
            previous: previous.iter().map(|s| SecretKeys::derive(s)).collect(),
        }
    }

    /// Whether previous secrets are configured (a rotation is under way).
    pub fn rotating(&self) -> bool {
        !self.previous.is_empty()
    }

    /// The key id that [`Keys::seal`] writes at the start of every blob.
    pub fn current_key_id(&self) -> [u8; KEY_ID_LEN] {
        self.current.aead_id
    }

    /// HMAC-SHA-256 of a normalised code: what the database stores instead of the code.
    pub fn code_hash(&self, normalised_code: &str) -> Vec<u8> {
        self.current.code_hash(normalised_code)
    }

    /// The code's HMACs under each previous secret, newest first: where a code made before the
    /// rotation is found. Empty (and no allocation) without previous secrets.
    pub fn previous_code_hashes(&self, normalised_code: &str) -> Vec<Vec<u8>> {
        self.previous
            .iter()
            .map(|k| k.code_hash(normalised_code))
            .collect()
    }

    /// Encrypts `plain`, binding it to `context` (for example the key id) so that a blob
    /// cannot be moved to another row.
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ct = self
            .current
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            // Encryption fails only for messages past 2^38 bytes; ours are at most 64 KiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + ct.len());
        out.extend_from_slice(&self.current.aead_id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts a blob made by [`Keys::seal`] with the same `context`, under the current secret
    /// or a previous one, chosen by the blob's key id; `None` when no configured secret made
    /// it or it was altered.
    pub fn open(&self, blob: &[u8], context: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if let Some(plain) = self.current.open(blob, context) {
            return Some(plain);
        }
        // Each `open` compares the key id before decrypting: only a key whose id matches is
        // tried (two secrets with the same 32-bit id are both tried; the tag tells them apart).
        self.previous.iter().find_map(|k| k.open(blob, context))
    }

    /// Whether the blob was sealed under the current secret (by its key id).
    pub fn sealed_under_current(&self, blob: &[u8]) -> bool {
        blob.get(..KEY_ID_LEN) == Some(&self.current.aead_id[..])
    }

    /// The blob opened under a previous secret and sealed again under the current one; `None`
    /// when no configured secret opens it.
    pub fn reseal(&self, blob: &[u8], context: &[u8]) -> Option<Vec<u8>> {
        let plain = self.open(blob, context)?;
        Some(self.seal(&plain, context))
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // Hmac::new_from_slice only fails for fixed-key-size MACs; HMAC takes any key length.
    std::process::abort()
}

/// SHA-256 of a bearer token: what the database stores instead of the token. The token holds
/// 256 random bits, so a fast hash is enough; there is nothing to brute-force.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new bearer token: `prefix` followed by 256 random bits in base64url.
///
/// Tokens, ids and codes come from [`rand::thread_rng`]: ChaCha12, a CSPRNG seeded from the
/// operating system and reseeded from it every 64 KiB of output, one per thread. That avoids a
/// `getrandom` system call for each of them (three or four per deposit). Encryption nonces and
/// the server secret still come straight from [`OsRng`].
pub fn new_token(prefix: &str) -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::thread_rng().fill_bytes(raw.as_mut());
    Zeroizing::new(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw.as_ref())))
}

/// A new holder token for the key `key_id` (`key_` and 32 hex digits, [`new_id`]):
/// `kmh_<the id's 32 hex digits>.<256 random bits in base64url>`.
///
/// The token names its key so that the store finds the key by its id and compares the token's
/// hash with the stored one ([`holder_key_id`]), instead of keeping an index of token hashes:
/// such an index takes a random B-tree page per deposit. The id is no secret (the holder gets it
/// with the token); the hash covers the whole token, so a token whose id part was changed opens
/// nothing.
pub fn new_holder_token(key_id: &str) -> Zeroizing<String> {
    let hex = key_id.strip_prefix("key_").unwrap_or(key_id);
    new_token(&format!("kmh_{hex}."))
}

/// The key id a holder token names (`kmh_<32 hex>.<secret>`), or `None` for a token made before
/// tokens carried their key's id (`kmh_<secret>`, whose base64url never holds a `.`).
pub fn holder_key_id(token: &str) -> Option<String> {
    let (hex, _) = token.strip_prefix("kmh_")?.split_once('.')?;
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("key_{hex}"))
}

/// A new opaque id with a type prefix (`key_`, `ten_`, `svc_`, …): 32 hex digits, the first 12
/// the Unix time in milliseconds, the other 20 random (80 bits).
///
/// Time-ordered, so that the ids of new rows sort after the ids already stored and each insert
/// into an index keyed by id (`keys.id`, `events.id`, `events(key_id, seq)`) appends to its
/// right-most B-tree page instead of dirtying a random one. An id reveals the millisecond it
/// was made (the API reports the creation time of keys and events anyway); it is not a secret
/// and never used as one.
pub fn new_id(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        & 0xffff_ffff_ffff;
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&(millis << 16).to_be_bytes());
    rand::thread_rng().fill_bytes(&mut raw[6..]);
    format!("{prefix}{}", hex::encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_context_binding() {
        let keys = Keys::derive(b"0123456789abcdef0123456789abcdef");
        let blob = keys.seal(b"hello", b"key_1");
        assert!(!blob.windows(5).any(|w| w == b"hello"));
        assert_eq!(keys.open(&blob, b"key_1").unwrap().as_slice(), b"hello");
        assert!(keys.open(&blob, b"key_2").is_none());
        let other = Keys::derive(b"another secret another secret 123");
        assert!(other.open(&blob, b"key_1").is_none());
    }

    #[test]
    fn a_rotation_opens_old_blobs_by_key_id_and_finds_old_codes() {
        let old = Keys::derive(b"0123456789abcdef0123456789abcdef");
        let blob = old.seal(b"hello", b"key_1");
        let new = Keys::derive_rotating(
            b"another secret another secret 123",
            &[
                b"yet another secret, never used 1",
                b"0123456789abcdef0123456789abcdef",
            ],
        );
        assert!(new.rotating());
        assert!(!new.sealed_under_current(&blob));
        assert_eq!(new.open(&blob, b"key_1").unwrap().as_slice(), b"hello");
        assert!(new.open(&blob, b"key_2").is_none());
        let resealed = new.reseal(&blob, b"key_1").unwrap();
        assert!(new.sealed_under_current(&resealed));
        assert_eq!(resealed[..KEY_ID_LEN], new.current_key_id());
        assert!(old.open(&resealed, b"key_1").is_none());
        let after = Keys::derive(b"another secret another secret 123");
        assert_eq!(
            after.open(&resealed, b"key_1").unwrap().as_slice(),
            b"hello"
        );
        // A blob of a secret that is no longer configured opens nowhere.
        assert!(after.open(&blob, b"key_1").is_none());
        assert!(after.reseal(&blob, b"key_1").is_none());

        assert_eq!(new.code_hash("1234"), after.code_hash("1234"));
        let previous = new.previous_code_hashes("1234");
        assert_eq!(previous.len(), 2);
        assert_eq!(previous[1], old.code_hash("1234"));
        assert!(!after.rotating());
        assert!(after.previous_code_hashes("1234").is_empty());
    }

    #[test]
    fn code_hash_is_the_hmac_under_the_derived_key() {
        // The HMAC state is keyed once at derivation; each hash must still be a fresh HMAC.
        let secret = b"0123456789abcdef0123456789abcdef";
        let keys = Keys::derive(secret);
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"keymaster v1"), secret)
            .expand(b"code-hmac", &mut key)
            .unwrap();
        for code in ["1234", "123456789012345", "abcd-efgh", ""] {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
            mac.update(code.as_bytes());
            assert_eq!(keys.code_hash(code), mac.finalize().into_bytes().to_vec());
        }
        assert_eq!(keys.code_hash("1234"), keys.code_hash("1234"));
    }

    #[test]
    fn code_hash_depends_on_secret() {
        let a = Keys::derive(b"0123456789abcdef0123456789abcdef");
        let b = Keys::derive(b"0123456789abcdef0123456789abcdeX");
        assert_eq!(a.code_hash("1234"), a.code_hash("1234"));
        assert_ne!(a.code_hash("1234"), b.code_hash("1234"));
        assert_ne!(a.code_hash("1234"), a.code_hash("1235"));
    }

    #[test]
    fn a_holder_token_names_its_key_and_an_old_one_names_none() {
        let id = new_id("key_");
        let token = new_holder_token(&id);
        assert!(token.starts_with("kmh_"));
        assert_eq!(holder_key_id(&token).as_deref(), Some(id.as_str()));
        assert_ne!(*new_holder_token(&id), *token);
        // Tokens made before: `kmh_` and base64url, which has no `.`.
        assert_eq!(holder_key_id(&new_token("kmh_")), None);
        assert_eq!(holder_key_id("kmh_0123.secret"), None);
        assert_eq!(
            holder_key_id("kmh_0123456789abcdef0123456789abcdeg.s"),
            None
        );
        assert_eq!(
            holder_key_id("kma_0123456789abcdef0123456789abcdef.s"),
            None
        );
    }

    #[test]
    fn tokens_are_prefixed_and_distinct() {
        let a = new_token("kma_");
        let b = new_token("kma_");
        assert!(a.starts_with("kma_"));
        assert!(a.len() >= 4 + 43);
        assert_ne!(*a, *b);
    }

    #[test]
    fn ids_are_time_ordered_with_80_random_bits() {
        let a = new_id("key_");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("key_");
        assert!(a.starts_with("key_") && a.len() == 4 + 32);
        assert!(a < b, "{a} then {b}");
        assert_ne!(a[16..], b[16..]);
    }

    #[test]
    fn secret_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.secret");
        let s1 = load_or_create_secret_file(&p).unwrap();
        let s2 = load_or_create_secret_file(&p).unwrap();
        assert_eq!(*s1, *s2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            // A file that others can read (an older install) is tightened when it is read.
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(*load_or_create_secret_file(&p).unwrap(), *s1);
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
