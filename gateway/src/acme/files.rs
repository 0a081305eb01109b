//! The file backend of [`CertStore`]: everything under `acme.storage`, one directory per CA
//! (so a staging certificate is never taken for a production one):
//!
//! ```text
//! <storage>/<ca>/account.json        account key and URL (instant-acme credentials)
//! <storage>/<ca>/<domain>.crt        certificate chain, leaf first (PEM)
//! <storage>/<ca>/<domain>.key        its private key (PEM)
//! <storage>/<ca>/<domain>.lock       flock(2) while an order for the domain runs
//! ```
//!
//! Directories are 0700, files 0600, each written to a temporary file, synced and renamed
//! over the old one. Pending challenges are kept in memory ([`Challenges`]): one process
//! answers its own orders.

use async_trait::async_trait;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::challenge::Challenges;
use super::storage::{CertStore, OrderLock, PendingChallenge, StoredCert};

pub struct FileStore {
    dir: PathBuf,
    challenges: Arc<Challenges>,
}

/// The directory name for a CA: its directory URL's host, port and path, with anything but
/// letters, digits, `.` and `-` turned into `_` (`acme-v02.api.letsencrypt.org_directory`).
pub fn ca_dir_name(directory: &str) -> String {
    let rest = directory
        .split_once("://")
        .map_or(directory, |(_, rest)| rest);
    let name: String = rest
        .trim_end_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "ca".into()
    } else {
        name
    }
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file in the same directory, synced
/// and renamed: a reader sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| annotate(e, "cannot write", path))
}

fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(annotate(e, "cannot read", path)),
    }
}

impl FileStore {
    /// The store for the CA at `directory` under `storage`; creates the directories.
    pub fn open(
        storage: &Path,
        directory: &str,
        challenges: Arc<Challenges>,
    ) -> io::Result<FileStore> {
        let dir = storage.join(ca_dir_name(directory));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| annotate(e, "cannot create", &dir))?;
        Ok(FileStore { dir, challenges })
    }

    fn path(&self, domain: &str, ext: &str) -> PathBuf {
        // Domains are checked host names: no `/` or `..` can reach here.
        self.dir.join(format!("{domain}.{ext}"))
    }
}

struct FileLock(#[allow(dead_code)] File);

#[async_trait]
impl OrderLock for FileLock {
    async fn release(self: Box<Self>) {
        // Closing the file releases the flock.
    }
}

#[async_trait]
impl CertStore for FileStore {
    fn describe(&self) -> String {
        format!("files under {}", self.dir.display())
    }

    async fn account(&self) -> io::Result<Option<Vec<u8>>> {
        read_optional(&self.dir.join("account.json"))
    }

    async fn put_account(&self, credentials: &[u8]) -> io::Result<()> {
        write_atomic(&self.dir.join("account.json"), credentials)
    }

    async fn certificate(&self, domain: &str) -> io::Result<Option<StoredCert>> {
        let chain = read_optional(&self.path(domain, "crt"))?;
        let key = read_optional(&self.path(domain, "key"))?;
        let (Some(chain), Some(key)) = (chain, key) else {
            return Ok(None);
        };
        let text = |b: Vec<u8>, p: PathBuf| {
            String::from_utf8(b).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not PEM text", p.display()),
                )
            })
        };
        Ok(Some(StoredCert {
            chain_pem: text(chain, self.path(domain, "crt"))?,
            key_pem: text(key, self.path(domain, "key"))?,
        }))
    }

    async fn put_certificate(&self, domain: &str, cert: &StoredCert) -> io::Result<()> {
        // Key first: a crash between the two renames leaves a new key beside the old
        // certificate, which the next start sees as a mismatch and orders again.
        write_atomic(&self.path(domain, "key"), cert.key_pem.as_bytes())?;
        write_atomic(&self.path(domain, "crt"), cert.chain_pem.as_bytes())
    }

    async fn put_challenge(&self, challenge: &PendingChallenge) -> io::Result<()> {
        self.challenges.insert(challenge).map_err(io::Error::other)
    }

    async fn remove_challenge(&self, challenge: &PendingChallenge) -> io::Result<()> {
        self.challenges.remove(challenge);
        Ok(())
    }

    async fn lock_order(&self, domain: &str) -> io::Result<Option<Box<dyn OrderLock>>> {
        let path = self.path(domain, "lock");
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| annotate(e, "cannot open", &path))?;
        // SAFETY: a valid open descriptor; flock has no memory effects.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(Box::new(FileLock(f))));
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(annotate(e, "cannot lock", &path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn files_are_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            FileStore::open(dir.path(), "https://127.0.0.1:14000/dir", Arc::default()).unwrap();
        let ca = dir.path().join("127.0.0.1_14000_dir");
        assert_eq!(
            fs::metadata(&ca).unwrap().permissions().mode() & 0o777,
            0o700
        );
        block_on(async {
            assert_eq!(store.certificate("a.test").await.unwrap(), None);
            let one = StoredCert {
                chain_pem: "chain".into(),
                key_pem: "key".into(),
            };
            store.put_certificate("a.test", &one).await.unwrap();
            let two = StoredCert {
                chain_pem: "chain2".into(),
                key_pem: "key2".into(),
            };
            store.put_certificate("a.test", &two).await.unwrap();
            assert_eq!(store.certificate("a.test").await.unwrap(), Some(two));
            store.put_account(b"{}").await.unwrap();
            assert_eq!(store.account().await.unwrap().as_deref(), Some(&b"{}"[..]));
        });
        let mut names: Vec<String> = fs::read_dir(&ca)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["a.test.crt", "a.test.key", "account.json"],
            "no temp files left"
        );
        for n in &names {
            let mode = fs::metadata(ca.join(n)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{n}");
        }
    }

    #[test]
    fn one_order_lock_per_domain() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), "https://ca.test/dir", Arc::default()).unwrap();
        block_on(async {
            let held = store.lock_order("a.test").await.unwrap();
            assert!(held.is_some());
            assert!(store.lock_order("a.test").await.unwrap().is_none());
            assert!(store.lock_order("b.test").await.unwrap().is_some());
            held.unwrap().release().await;
            assert!(store.lock_order("a.test").await.unwrap().is_some());
        });
    }

    #[test]
    fn ca_names() {
        assert_eq!(
            ca_dir_name("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org_directory"
        );
        assert_eq!(
            ca_dir_name("https://127.0.0.1:14000/dir/"),
            "127.0.0.1_14000_dir"
        );
    }
}
