//! The device's keystore: one JSON file per label in a directory only the user can read
//! (`KEYMASTER_KEYSTORE`, default `keymaster/` under the user's data directory, i.e.
//! `$XDG_DATA_HOME/keymaster` or `~/.local/share/keymaster`). The directory is 0700, files 0600,
//! and every write is atomic (a temporary file in the same directory, then a rename), so a crash
//! never leaves a half-written holder token or private key.
//!
//! Not responsible for talking to the key master or for deciding what goes into an entry.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// What the device keeps about one deposit.
#[derive(Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The holder's name for the key; also the file name.
    pub label: String,
    /// The key's id at the key master.
    pub key_id: String,
    /// `kmh_…`: opens this one key (status, revoke, recode, events).
    pub holder_token: String,
    /// The live code, normalised; `None` once the device knows the key is gone.
    pub code: Option<String>,
    /// The live code in groups of four.
    pub code_display: Option<String>,
    /// PKCS#8 PEM of the private key, when this device holds it (made here or on the server);
    /// zeroized when the entry is dropped.
    pub private_key: Option<Zeroizing<String>>,
    /// The public key as deposited (PEM or OpenSSH line); `None` for server-made pairs.
    pub public_key: Option<String>,
    /// `ed25519`, `p256`, `rsa-3072`, …
    pub algorithm: String,
    /// `SHA256:…` over the SubjectPublicKeyInfo.
    pub fingerprint: Option<String>,
    /// When the key master drops the key unless it is retrieved first.
    pub expires_at: jiff::Timestamp,
}

impl std::fmt::Debug for Entry {
    // Holder token and private key are secrets: never in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("label", &self.label)
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The keystore directory.
#[derive(Debug)]
pub struct Keystore {
    dir: PathBuf,
}

impl Keystore {
    /// The keystore of `KEYMASTER_KEYSTORE` or the default location; nothing is created yet.
    pub fn locate() -> anyhow::Result<Self> {
        if let Some(dir) = std::env::var_os("KEYMASTER_KEYSTORE").filter(|d| !d.is_empty()) {
            return Ok(Keystore { dir: dir.into() });
        }
        let data = dirs::data_dir().context(
            "cannot find the user's data directory: set KEYMASTER_KEYSTORE to a directory",
        )?;
        Ok(Keystore {
            dir: data.join("keymaster"),
        })
    }

    /// A keystore at `dir` (for tests).
    #[cfg(test)]
    pub fn at(dir: PathBuf) -> Self {
        Keystore { dir }
    }

    /// Creates the directory (0700) if needed and tightens an existing one that others could
    /// read. Called before a deposit, so that a keystore that cannot be written fails the
    /// command before a key exists at the key master.
    pub fn ensure_dir(&self) -> anyhow::Result<()> {
        let dir = &self.dir;
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .with_context(|| format!("cannot create the keystore {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = fs::metadata(dir)
                .with_context(|| format!("cannot read the keystore {}", dir.display()))?;
            if meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).with_context(|| {
                    format!("cannot make the keystore {} private", dir.display())
                })?;
            }
        }
        Ok(())
    }

    /// The file that holds `label`.
    fn path(&self, label: &str) -> anyhow::Result<PathBuf> {
        Ok(self.dir.join(file_name(label)?))
    }

    /// Whether an entry for `label` exists.
    pub fn contains(&self, label: &str) -> anyhow::Result<bool> {
        Ok(self.path(label)?.exists())
    }

    /// The entry for `label`.
    pub fn load(&self, label: &str) -> anyhow::Result<Entry> {
        let path = self.path(label)?;
        match fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
                "no key labelled {label:?} in the keystore {}",
                self.dir.display()
            ),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Every entry, sorted by label. A missing keystore is an empty one.
    pub fn list(&self) -> anyhow::Result<Vec<Entry>> {
        let dir = match fs::read_dir(&self.dir) {
            Ok(dir) => dir,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("cannot read the keystore {}", self.dir.display()))
            }
        };
        let mut entries = Vec::new();
        for item in dir {
            let path = item
                .with_context(|| format!("cannot read the keystore {}", self.dir.display()))?
                .path();
            if path.extension().is_some_and(|ext| ext == "json") {
                let bytes =
                    fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                entries.push(parse(&path, &bytes)?);
            }
        }
        entries.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(entries)
    }

    /// Writes `entry` atomically with mode 0600, replacing an older version.
    pub fn save(&self, entry: &Entry) -> anyhow::Result<()> {
        self.ensure_dir()?;
        let path = self.path(&entry.label)?;
        let json = serde_json::to_vec_pretty(entry).context("cannot encode the keystore entry")?;
        // NamedTempFile creates the file with mode 0600 in the same directory, so the rename
        // below is atomic and the secret is never readable by others, even for a moment.
        let mut file = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot write to the keystore {}", self.dir.display()))?;
        file.write_all(&json)
            .and_then(|()| file.as_file().sync_all())
            .with_context(|| format!("cannot write to the keystore {}", self.dir.display()))?;
        file.persist(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        // Make the rename itself durable.
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

fn parse(path: &Path, bytes: &[u8]) -> anyhow::Result<Entry> {
    serde_json::from_slice(bytes)
        .with_context(|| format!("{} is not a keymaster keystore entry", path.display()))
}

/// The file name of `label`: letters, digits, `-` and `_` as they are, everything else (and a
/// leading `.`) as `%XX`, so that no label can name a path outside the keystore, collide with
/// another label, or hide as a dot file.
fn file_name(label: &str) -> anyhow::Result<String> {
    if label.is_empty() {
        bail!("the label must not be empty");
    }
    let mut name = String::with_capacity(label.len() + 5);
    for (i, byte) in label.bytes().enumerate() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || (byte == b'.' && i > 0) {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    name.push_str(".json");
    if name.len() > 255 {
        bail!("the label is too long for a keystore file name; choose a shorter one");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(label: &str) -> Entry {
        Entry {
            label: label.to_owned(),
            key_id: "k1".into(),
            holder_token: "kmh_secret".into(),
            code: Some("4729104755182036".into()),
            code_display: Some("4729-1047-5518-2036".into()),
            private_key: Some(Zeroizing::new("-----BEGIN PRIVATE KEY-----".into())),
            public_key: None,
            algorithm: "ed25519".into(),
            fingerprint: Some("SHA256:x".into()),
            expires_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn file_names_cannot_escape_the_directory() {
        assert_eq!(file_name("github.com").unwrap(), "github.com.json");
        assert_eq!(file_name("../x").unwrap(), "%2E.%2Fx.json");
        assert_eq!(file_name("a b/c").unwrap(), "a%20b%2Fc.json");
        assert_eq!(file_name(".hidden").unwrap(), "%2Ehidden.json");
        assert!(file_name("").is_err());
        assert!(file_name(&"é".repeat(100)).is_err());
    }

    #[test]
    fn save_load_list_with_private_permissions() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Keystore::at(tmp.path().join("ks"));
        store.save(&entry("b/2")).unwrap();
        store.save(&entry("a")).unwrap();
        let mut changed = entry("a");
        changed.code = None;
        store.save(&changed).unwrap();
        assert!(store.load("a").unwrap().code.is_none());
        let labels: Vec<_> = store.list().unwrap().into_iter().map(|e| e.label).collect();
        assert_eq!(labels, ["a", "b/2"]);
        assert!(store
            .load("c")
            .unwrap_err()
            .to_string()
            .contains("no key labelled"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&tmp.path().join("ks")), 0o700);
            assert_eq!(mode(&tmp.path().join("ks/a.json")), 0o600);
            // No temporary files are left behind.
            assert_eq!(fs::read_dir(tmp.path().join("ks")).unwrap().count(), 2);
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!("{:?}", entry("a"));
        assert!(!text.contains("kmh_secret") && !text.contains("PRIVATE"));
    }
}
