//! The persistent cache: the last good bundle, encrypted and authenticated
//! with AES-256-GCM under a key read from `cache.key_file` (which the
//! configuration refuses in the cache file's own directory), written with
//! mode 0600 by write-then-rename, so a restarted sidecar can serve at once
//! while Vault is down. A file that fails authentication is ignored.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use lockstep_model::UnixSeconds;
use lockstep_model::bundle::Bundle;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const MAGIC: &[u8; 10] = b"LSTKCACHE1";
/// Largest cache file read.
const MAX_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The key file is missing or not 32 bytes (raw or base64).
    #[error("cache.key_file {path}: {message}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Reading or writing the cache file failed.
    #[error("cache.file {path}: {message}")]
    Io {
        /// The cache file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The file was not written by this key for this pool, or was altered.
    #[error("cache.file {0}: failed its integrity check")]
    Integrity(PathBuf),
}

/// Versions a sidecar keeps beyond its bundle, by keyring (see
/// `store::carry_over`): they must survive a restart from the cache.
pub type Kept = std::collections::BTreeMap<String, Vec<lockstep_model::bundle::BundleVersion>>;

#[derive(Serialize, Deserialize)]
struct Contents {
    received_at: UnixSeconds,
    bundle: Bundle,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    kept: Kept,
}

/// The cache file and its key.
pub struct CacheFile {
    path: PathBuf,
    pool: String,
    key: LessSafeKey,
}

impl std::fmt::Debug for CacheFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl CacheFile {
    /// Opens the cache at `path` with the key in `key_file`.
    pub fn new(path: &Path, key_file: &Path, pool: &str) -> Result<Self, CacheError> {
        let key_error = |message: String| CacheError::Key { path: key_file.to_path_buf(), message };
        let raw = Zeroizing::new(std::fs::read(key_file).map_err(|e| key_error(e.to_string()))?);
        let key = if raw.len() == 32 {
            raw
        } else {
            let text = String::from_utf8_lossy(&raw).trim().to_string();
            Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default())
        };
        let unbound =
            UnboundKey::new(&AES_256_GCM, &key).map_err(|_| key_error("must hold 32 bytes, raw or base64".into()))?;
        Ok(Self { path: path.to_path_buf(), pool: pool.into(), key: LessSafeKey::new(unbound) })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn aad(&self) -> Vec<u8> {
        [MAGIC.as_slice(), self.pool.as_bytes()].concat()
    }

    fn io(&self, error: impl std::fmt::Display) -> CacheError {
        CacheError::Io { path: self.path.clone(), message: error.to_string() }
    }

    /// Writes `bundle` atomically.
    pub fn save(&self, bundle: &Bundle, received_at: UnixSeconds) -> Result<(), CacheError> {
        self.save_kept(bundle, &Kept::new(), received_at)
    }

    /// Writes `bundle` and the versions kept beyond it atomically.
    pub fn save_kept(&self, bundle: &Bundle, kept: &Kept, received_at: UnixSeconds) -> Result<(), CacheError> {
        let contents = Contents { received_at, bundle: bundle.clone(), kept: kept.clone() };
        let mut data = Zeroizing::new(serde_json::to_vec(&contents).map_err(|e| self.io(e))?);
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| self.io("no randomness"))?;
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(self.aad()), &mut *data)
            .map_err(|_| self.io("encryption failed"))?;
        // A fresh name, created exclusively: never an existing file, never
        // through a symlink someone left there.
        let tmp = self.path.with_extension(format!("tmp{}-{:016x}", std::process::id(), fastrand::u64(..)));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&nonce)?;
            file.write_all(&data)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.io(e)
        })
    }

    /// Reads the cache: `None` when there is none yet.
    pub fn load(&self) -> Result<Option<(Bundle, UnixSeconds)>, CacheError> {
        Ok(self.load_kept()?.map(|(bundle, received_at, _)| (bundle, received_at)))
    }

    /// Reads the cache with the versions kept beyond the bundle.
    pub fn load_kept(&self) -> Result<Option<(Bundle, UnixSeconds, Kept)>, CacheError> {
        let size = match std::fs::metadata(&self.path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        if size > MAX_CACHE_BYTES {
            return Err(self.io(format!("larger than {MAX_CACHE_BYTES} bytes")));
        }
        let bytes = Zeroizing::new(std::fs::read(&self.path).map_err(|e| self.io(e))?);
        let integrity = || CacheError::Integrity(self.path.clone());
        let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(integrity)?;
        if rest.len() < NONCE_LEN {
            return Err(integrity());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| integrity())?;
        let mut sealed = Zeroizing::new(sealed.to_vec());
        let plain = self.key.open_in_place(nonce, Aad::from(self.aad()), &mut sealed).map_err(|_| integrity())?;
        let contents: Contents = serde_json::from_slice(plain).map_err(|_| integrity())?;
        Ok(Some((contents.bundle, contents.received_at, contents.kept)))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use lockstep_model::KeyType;

    use super::*;
    use crate::store::testdata::{bundle, version};

    fn setup() -> (tempfile::TempDir, CacheFile) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("keys")).expect("dir");
        let key = dir.path().join("keys/cache.key");
        std::fs::write(&key, base64::engine::general_purpose::STANDARD.encode([7u8; 32])).expect("key");
        let cache = CacheFile::new(&dir.path().join("cache.bin"), &key, "web").expect("cache");
        (dir, cache)
    }

    #[test]
    fn round_trip_with_mode_0600_and_no_plaintext() {
        let (_dir, cache) = setup();
        assert!(cache.load().expect("empty").is_none());
        let b =
            bundle("web", vec![("api", KeyType::HmacSha256, 1, vec![version(KeyType::HmacSha256, 1, Some(0), None)])]);
        cache.save(&b, 42).expect("save");
        let mode = std::fs::metadata(cache.path()).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let raw = std::fs::read(cache.path()).expect("read");
        let secret = b.keyrings["api"].versions[0].private_key.as_ref().expect("key").expose().to_vec();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&secret);
        assert!(!raw.windows(b64.len()).any(|w| w == b64.as_bytes()));
        assert_eq!(cache.load().expect("load"), Some((b.clone(), 42)));
        // With versions kept beyond the bundle.
        let mut kept = Kept::new();
        kept.insert("api".into(), b.keyrings.values().next().map(|k| k.versions.clone()).unwrap_or_default());
        cache.save_kept(&b, &kept, 43).expect("save");
        assert_eq!(cache.load_kept().expect("load"), Some((b, 43, kept)));
    }

    #[test]
    fn altered_files_fail_the_integrity_check() {
        let (dir, cache) = setup();
        let b =
            bundle("web", vec![("api", KeyType::HmacSha256, 1, vec![version(KeyType::HmacSha256, 1, Some(0), None)])]);
        cache.save(&b, 42).expect("save");
        let mut raw = std::fs::read(cache.path()).expect("read");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        std::fs::write(cache.path(), &raw).expect("write");
        assert!(matches!(cache.load(), Err(CacheError::Integrity(_))));
        // Another pool's sidecar with the same key cannot use it either.
        cache.save(&b, 42).expect("save");
        let other = CacheFile::new(cache.path(), &dir.path().join("keys/cache.key"), "db").expect("other");
        assert!(matches!(other.load(), Err(CacheError::Integrity(_))));
    }
}
