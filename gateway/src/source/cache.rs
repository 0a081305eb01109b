//! The on-disk cache of cluster mode: the last document a replica served, so it can start
//! while etcd is down. Written before the document is published (never older than what was
//! served), atomically: a temporary file in the same directory, synced, then renamed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// One cached document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cached {
    /// The etcd key it was read from (a cache of another key is not used).
    pub key: String,
    /// Its `mod_revision`: the generation it was served as.
    pub revision: i64,
    /// When it was written, RFC 3339.
    pub written: String,
    /// SHA-256 of `document`, hex: a damaged cache is refused.
    pub sha256: String,
    pub document: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Reads the cache at `path` for `key`: `Ok(None)` when there is none.
pub fn read(path: &Path, key: &str) -> Result<Option<Cached>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the cache {}: {e}", path.display())),
    };
    let cached: Cached = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the cache {} is damaged ({e})", path.display()))?;
    if cached.sha256 != sha256_hex(cached.document.as_bytes()) {
        return Err(format!(
            "the cache {} is damaged (its document does not match its hash)",
            path.display()
        ));
    }
    if cached.key != key {
        return Err(format!(
            "the cache {} holds etcd key `{}`, not `{key}`",
            path.display(),
            cached.key
        ));
    }
    Ok(Some(cached))
}

/// Replaces the cache at `path` in one step.
pub fn write(path: &Path, key: &str, revision: i64, document: &str) -> std::io::Result<()> {
    let cached = Cached {
        key: key.to_string(),
        revision,
        written: anygate_plugins::access_log::rfc3339_millis(std::time::SystemTime::now()),
        sha256: sha256_hex(document.as_bytes()),
        document: document.to_string(),
    };
    let body = serde_json::to_vec_pretty(&cached).map_err(std::io::Error::other)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.cache".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself survives a crash once the directory is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.cache");
        assert_eq!(read(&path, "/k").unwrap(), None);
        write(&path, "/k", 7, "env: a\n").unwrap();
        let c = read(&path, "/k").unwrap().unwrap();
        assert_eq!((c.revision, c.document.as_str()), (7, "env: a\n"));
        write(&path, "/k", 9, "env: b\n").unwrap();
        assert_eq!(read(&path, "/k").unwrap().unwrap().revision, 9);
        assert!(read(&path, "/other").unwrap_err().contains("not `/other`"));
        // Only the cache is left in the directory: no temporary files.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("env: b", "env: c")).unwrap();
        assert!(read(&path, "/k").unwrap_err().contains("damaged"));
        std::fs::write(&path, "{").unwrap();
        assert!(read(&path, "/k").unwrap_err().contains("damaged"));
    }
}
