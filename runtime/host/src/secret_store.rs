//! kata's own encrypted secret store: `kata secret set|list|remove`, and the
//! `kata:NAME` secret source in kata.toml.
//!
//! The values live in `.kata/secrets.enc` inside the workspace, encrypted with
//! ChaCha20-Poly1305 (ring, the crypto library rustls already uses). The key
//! lives *apart* from the workspace, in the user's data directory
//! (`$XDG_DATA_HOME/kata/secret.key`, or the file `KATA_SECRET_KEY_FILE`
//! names), mode 0600, created on first `kata secret set`. So a copy of the
//! workspace — a backup, a tarball sent for help, a synced folder — carries
//! no usable secret.
//!
//! The file is one authenticated blob:
//!
//! ```text
//! "KATASEC1" | key id (8 bytes) | nonce (12 bytes) | ciphertext of JSON + 16-byte tag
//! ```
//!
//! The magic and the key id are the associated data, so any change to any
//! byte fails the integrity check. The key id (a hash of the key) tells a
//! wrong key apart from a damaged file, so each gets its own message. Every
//! write uses a fresh random nonce, goes to a temporary file in the same
//! directory, is synced, and replaces the old file with a rename: a crash
//! leaves either the old store or the new one, never half of one. Writers take
//! `.kata/secrets.lock` so two `kata secret set` at once lose nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The store's file name inside the workspace's `.kata/` directory.
pub const STORE_FILE: &str = "secrets.enc";

/// The environment variable that overrides where the key file is.
pub const KEY_ENV: &str = "KATA_SECRET_KEY_FILE";

const MAGIC: &[u8; 8] = b"KATASEC1";
const KEY_ID_LEN: usize = 8;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;
const KEY_LEN: usize = 32;

/// What can go wrong with the store. Every message is one paragraph that says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The secret is not in the store.
    #[error(
        "secret {name} is not in kata's secret store ({}); set it with `kata secret set {name}` \
         (the value is read from the terminal without echo, or from stdin)",
        store.display()
    )]
    Missing {
        /// The secret's name.
        name: String,
        /// The store file.
        store: PathBuf,
    },
    /// The store was written with another key.
    #[error(
        "{} was encrypted with a different key than {} (the store needs key id {want}, that file is {have}); \
         if you moved or recreated the key, put the original key file back or point {KEY_ENV} at it; \
         otherwise remove {} and set the secrets again with `kata secret set NAME`",
        store.display(), key.display(), store.display()
    )]
    WrongKey {
        /// The store file.
        store: PathBuf,
        /// The key file used.
        key: PathBuf,
        /// The key id the store was written with.
        want: String,
        /// The key id of the key file.
        have: String,
    },
    /// The store fails authentication: changed or damaged.
    #[error(
        "{} fails its integrity check: it was changed or damaged after kata wrote it, so none of its secrets \
         are used; restore it from a backup, or remove it and set the secrets again with `kata secret set NAME`",
        store.display()
    )]
    Tampered {
        /// The store file.
        store: PathBuf,
    },
    /// The store exists but the key does not.
    #[error(
        "kata's secret key {} is missing, so {} cannot be decrypted; restore the key file (or point {KEY_ENV} \
         at it), or remove {} and set the secrets again with `kata secret set NAME`",
        key.display(), store.display(), store.display()
    )]
    NoKey {
        /// The store file.
        store: PathBuf,
        /// Where the key was looked for.
        key: PathBuf,
    },
    /// The key file is readable by others or malformed.
    #[error("{0}")]
    BadKey(String),
    /// Reading or writing failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| StoreError::Io { what, path, source }
}

/// One stored secret: its value and when it was set.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    value: String,
    set_ms: u64,
}

/// The decrypted store.
#[derive(Default, Serialize, Deserialize)]
struct Contents {
    secrets: BTreeMap<String, Entry>,
}

/// A secret's name and when it was set, as `kata secret list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// The secret's name.
    pub name: String,
    /// When it was last set, in milliseconds since the Unix epoch.
    pub set_ms: u64,
}

/// Where the key is: `KATA_SECRET_KEY_FILE` if set, else
/// `$XDG_DATA_HOME/kata/secret.key` (the platform's data directory elsewhere).
pub fn default_key_path() -> Result<PathBuf, StoreError> {
    if let Some(p) = std::env::var_os(KEY_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let dirs = directories::ProjectDirs::from("", "", "kata").ok_or_else(|| {
        StoreError::BadKey(format!("cannot find a home directory for kata's secret key; set {KEY_ENV} to the key file's path"))
    })?;
    Ok(dirs.data_dir().join("secret.key"))
}

/// A workspace's secret store and the key that opens it.
#[derive(Debug, Clone)]
pub struct SecretStore {
    path: PathBuf,
    key_path: PathBuf,
}

impl SecretStore {
    /// The store in `state_dir` (a workspace's `.kata/`), opened with the key
    /// at `key_path`. Nothing is read or created yet.
    pub fn new(state_dir: &Path, key_path: PathBuf) -> Self {
        Self { path: state_dir.join(STORE_FILE), key_path }
    }

    /// The store of the workspace at `root`, with the default key.
    pub fn for_workspace(root: &Path) -> Result<Self, StoreError> {
        Ok(Self::new(&root.join(".kata"), default_key_path()?))
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key file.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// The value of secret `name`.
    pub fn get(&self, name: &str) -> Result<String, StoreError> {
        let missing = || StoreError::Missing { name: name.to_string(), store: self.path.clone() };
        let contents = self.read()?.ok_or_else(missing)?;
        contents.secrets.get(name).map(|e| e.value.clone()).ok_or_else(missing)
    }

    /// Every secret's name and when it was set, by name. Values stay encrypted
    /// on disk and are dropped here.
    pub fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let contents = self.read()?.unwrap_or_default();
        Ok(contents.secrets.into_iter().map(|(name, e)| Listed { name, set_ms: e.set_ms }).collect())
    }

    /// Set `name` to `value`, creating the key and the store on first use.
    /// Returns whether it replaced an earlier value.
    pub fn set(&self, name: &str, value: &str, now_ms: u64) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        let key = self.key(true)?;
        let mut contents = self.read_with(&key)?.unwrap_or_default();
        let old = contents.secrets.insert(name.to_string(), Entry { value: value.to_string(), set_ms: now_ms });
        self.write(&key, &contents)?;
        Ok(old.is_some())
    }

    /// Remove `name`. Returns whether it was there.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        if !self.path.exists() {
            return Ok(false);
        }
        let key = self.key(false)?;
        let Some(mut contents) = self.read_with(&key)? else { return Ok(false) };
        if contents.secrets.remove(name).is_none() {
            return Ok(false);
        }
        self.write(&key, &contents)?;
        Ok(true)
    }

    /// Decrypt the store; None when there is none yet.
    fn read(&self) -> Result<Option<Contents>, StoreError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let key = self.key(false)?;
        self.read_with(&key)
    }

    fn read_with(&self, key: &[u8; KEY_LEN]) -> Result<Option<Contents>, StoreError> {
        let mut bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("cannot read", &self.path)(e)),
        };
        let tampered = || StoreError::Tampered { store: self.path.clone() };
        if bytes.len() < HEADER_LEN + CHACHA20_POLY1305.tag_len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(tampered());
        }
        let (header, sealed) = bytes.split_at_mut(HEADER_LEN);
        let want = &header[MAGIC.len()..MAGIC.len() + KEY_ID_LEN];
        let have = key_id(key);
        if want != have {
            return Err(StoreError::WrongKey {
                store: self.path.clone(),
                key: self.key_path.clone(),
                want: hex::encode(want),
                have: hex::encode(have),
            });
        }
        let nonce = Nonce::try_assume_unique_for_key(&header[MAGIC.len() + KEY_ID_LEN..]).map_err(|_| tampered())?;
        let plain = aead_key(key).open_in_place(nonce, Aad::from(&header[..MAGIC.len() + KEY_ID_LEN]), sealed).map_err(|_| tampered())?;
        serde_json::from_slice(plain).map(Some).map_err(|_| tampered())
    }

    /// Encrypt `contents` with a fresh nonce and replace the store atomically.
    fn write(&self, key: &[u8; KEY_LEN], contents: &Contents) -> Result<(), StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError::BadKey("the system random number generator failed; try again".into()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + 256);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&key_id(key));
        let aad = out.clone();
        out.extend_from_slice(&nonce);
        let mut body = serde_json::to_vec(contents).map_err(|e| StoreError::BadKey(format!("cannot encode the store: {e}")))?;
        aead_key(key)
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut body)
            .map_err(|_| StoreError::BadKey("encryption failed".into()))?;
        out.extend_from_slice(&body);
        // NamedTempFile is created with mode 0600 in the same directory, so
        // the rename is atomic and the file is never readable by others.
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("cannot create a temporary file in", dir))?;
        tmp.write_all(&out).map_err(io("cannot write", tmp.path()))?;
        tmp.as_file().sync_all().map_err(io("cannot sync", &self.path))?;
        tmp.persist(&self.path).map_err(|e| io("cannot replace", &self.path)(e.error))?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Hold `.kata/secrets.lock` while reading, changing and writing.
    fn lock(&self) -> Result<File, StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let path = dir.join("secrets.lock");
        let mut opts = File::options();
        opts.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let f = opts.open(&path).map_err(io("cannot open", &path))?;
        f.lock().map_err(io("cannot lock", &path))?;
        Ok(f)
    }

    /// Read the key, or create it when `create` and there is none.
    fn key(&self, create: bool) -> Result<[u8; KEY_LEN], StoreError> {
        let p = &self.key_path;
        match File::open(p) {
            Ok(mut f) => {
                check_private(&f, p)?;
                let mut text = String::new();
                f.read_to_string(&mut text).map_err(io("cannot read", p))?;
                let bad = || {
                    StoreError::BadKey(format!(
                        "{} is not a kata secret key (it must hold 64 hex digits, as kata wrote it); \
                         restore the original key file, or point {KEY_ENV} at it",
                        p.display()
                    ))
                };
                let raw = hex::decode(text.trim()).map_err(|_| bad())?;
                raw.try_into().map_err(|_| bad())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Err(StoreError::NoKey { store: self.path.clone(), key: p.clone() });
                }
                self.create_key()
            }
            Err(e) => Err(io("cannot read", p)(e)),
        }
    }

    fn create_key(&self) -> Result<[u8; KEY_LEN], StoreError> {
        let p = &self.key_path;
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let mut key = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| StoreError::BadKey("the system random number generator failed; try again".into()))?;
        let mut opts = File::options();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(p) {
            Ok(mut f) => {
                f.write_all(format!("{}\n", hex::encode(key)).as_bytes()).map_err(io("cannot write", p))?;
                f.sync_all().map_err(io("cannot sync", p))?;
                tracing::info!("created kata's secret key {}; back it up: without it the store cannot be read", p.display());
                Ok(key)
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.key(false),
            Err(e) => Err(io("cannot create", p)(e)),
        }
    }
}

fn aead_key(key: &[u8; KEY_LEN]) -> LessSafeKey {
    // A 32-byte key is always valid for ChaCha20-Poly1305.
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key is valid for ChaCha20-Poly1305");
    LessSafeKey::new(unbound)
}

fn key_id(key: &[u8; KEY_LEN]) -> [u8; KEY_ID_LEN] {
    let mut h = Sha256::new();
    h.update(b"kata secret key id v1\0");
    h.update(key);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&h.finalize()[..KEY_ID_LEN]);
    id
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(io("cannot create", dir))
}

/// The key must be readable by its owner only, like an SSH key.
fn check_private(f: &File, p: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = f.metadata().map_err(io("cannot read", p))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::BadKey(format!(
                "kata's secret key {} has mode {mode:04o}, so other users can read it; run `chmod 600 {}` \
                 (and if others may have read it, remove the store and set the secrets again with a new key)",
                p.display(),
                p.display()
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = (f, p);
    Ok(())
}

/// Read a secret's value from its source now: an environment variable, a
/// file (relative to `workspace`), or this store (`kata:NAME`). The source
/// itself is a reference in kata.toml (see [`kata_policy::policy::SecretSource`]).
pub fn resolve(source: &kata_policy::policy::SecretSource, workspace: &Path) -> Result<String, String> {
    source.resolve_with(workspace, &lookup(workspace))
}

/// A `kata:NAME` lookup in the workspace's store, for
/// [`kata_policy::policy::Policy::environment_diagnostics`].
pub fn lookup(workspace: &Path) -> impl Fn(&str) -> Result<String, String> + '_ {
    move |name| SecretStore::for_workspace(workspace).and_then(|s| s.get(name)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> SecretStore {
        SecretStore::new(&dir.join("ws/.kata"), dir.join("keys/secret.key"))
    }

    #[test]
    fn set_get_list_remove_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        assert!(s.list().expect("empty list").is_empty());
        assert!(matches!(s.get("a"), Err(StoreError::Missing { .. })));
        assert!(!s.set("bot_token", "123:ABC", 10).expect("set"));
        assert!(s.set("bot_token", "456:DEF", 20).expect("replace"));
        s.set("other", "x", 30).expect("set");
        assert_eq!(s.get("bot_token").expect("get"), "456:DEF");
        let names: Vec<(String, u64)> = s.list().expect("list").into_iter().map(|l| (l.name, l.set_ms)).collect();
        assert_eq!(names, [("bot_token".to_string(), 20), ("other".to_string(), 30)]);
        assert!(s.remove("other").expect("remove"));
        assert!(!s.remove("other").expect("gone"));
        assert_eq!(s.list().expect("list").len(), 1);
        // Nothing of the value is visible on disk.
        let raw = std::fs::read(s.path()).expect("store");
        assert!(!raw.windows(7).any(|w| w == b"456:DEF") && !raw.windows(9).any(|w| w == b"bot_token"));
    }

    #[cfg(unix)]
    #[test]
    fn key_and_store_are_private_and_the_key_lives_apart() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        s.set("t", "value-1", 1).expect("set");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(s.key_path()), 0o600);
        assert_eq!(mode(s.path()), 0o600);
        assert!(!s.key_path().starts_with(dir.path().join("ws")));
        std::fs::set_permissions(s.key_path(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = s.get("t").expect_err("world-readable key").to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_wrong_key_and_a_tampered_file_are_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        s.set("t", "value-1", 1).expect("set");
        let original = std::fs::read(s.path()).expect("store");
        // Every single flipped bit is caught.
        for i in [0, 9, HEADER_LEN - 1, HEADER_LEN + 2, original.len() - 1] {
            let mut bad = original.clone();
            bad[i] ^= 0x01;
            std::fs::write(s.path(), &bad).expect("write");
            let e = s.get("t").expect_err("tampered");
            let ok = matches!(e, StoreError::Tampered { .. }) || (matches!(e, StoreError::WrongKey { .. }) && (8..16).contains(&i));
            assert!(ok, "byte {i}: {e}");
        }
        std::fs::write(s.path(), &original[..original.len() - 3]).expect("truncate");
        assert!(matches!(s.get("t"), Err(StoreError::Tampered { .. })));
        std::fs::write(s.path(), &original).expect("restore");
        assert_eq!(s.get("t").expect("restored"), "value-1");
        // Another key (another machine, a recreated key): WrongKey, and the message says what to do.
        let other = SecretStore::new(s.path().parent().expect("dir"), dir.path().join("other.key"));
        other.create_key().expect("key");
        let e = other.get("t").expect_err("wrong key");
        assert!(matches!(e, StoreError::WrongKey { .. }), "{e}");
        assert!(e.to_string().contains(KEY_ENV), "{e}");
        // No key at all.
        let none = SecretStore::new(s.path().parent().expect("dir"), dir.path().join("missing.key"));
        let e = none.get("t").expect_err("no key");
        assert!(matches!(e, StoreError::NoKey { .. }) && e.to_string().contains("missing"), "{e}");
        // Setting with another key is refused and never replaces the store.
        assert!(matches!(none.set("u", "v", 2), Err(StoreError::WrongKey { .. })));
        assert_eq!(std::fs::read(s.path()).expect("store"), original);
    }

    #[test]
    fn a_failed_write_leaves_the_old_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(dir.path());
        s.set("t", "value-1", 1).expect("set");
        let before = std::fs::read(s.path()).expect("store");
        // A key file that is not a key: set refuses before touching the store.
        std::fs::write(s.key_path(), "not hex\n").expect("write");
        let e = s.set("t", "value-2", 2).expect_err("bad key").to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        assert_eq!(std::fs::read(s.path()).expect("store"), before);
        // No temporary files are left behind.
        let left: Vec<_> = std::fs::read_dir(s.path().parent().expect("dir"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Whatever the names and values, what is set is what is read back,
        /// and the bytes on disk never contain a value.
        #[test]
        fn values_round_trip_and_never_appear_on_disk(
            entries in proptest::collection::btree_map("[a-z_]{1,12}", "[ -~]{8,40}", 1..5),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let s = SecretStore::new(dir.path(), dir.path().join("k"));
            for (k, v) in &entries {
                s.set(k, v, 1).expect("set");
            }
            let raw = std::fs::read(s.path()).expect("store");
            for (k, v) in &entries {
                prop_assert_eq!(&s.get(k).expect("get"), v);
                prop_assert!(!raw.windows(v.len()).any(|w| w == v.as_bytes()));
            }
        }

        /// Random bytes in place of the store are always refused, never panic.
        #[test]
        fn garbage_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let s = SecretStore::new(dir.path(), dir.path().join("k"));
            s.set("t", "value-1", 1).expect("set");
            std::fs::write(s.path(), &bytes).expect("write");
            prop_assert!(s.get("t").is_err());
        }
    }
}
