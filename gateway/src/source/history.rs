//! `anygate config history | get`: reading the key's revisions back. The times come from the
//! records `push` and `rollback` write beside each revision (etcd keeps no timestamps).

use super::bootstrap::Bootstrap;
use super::cache::sha256_hex;
use super::cli::{bootstrap_and_runtime, current, fail, old_document};
use super::etcd::{Etcd, EtcdError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

/// Who pushed a revision, and when (the pushing machine's clock).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub time: String,
    pub by: String,
    /// `push`, `push --force`, `rollback to 12`.
    pub action: String,
    pub size: usize,
    pub sha256: String,
}

/// The history records by the revision they describe.
pub(super) async fn records(
    etcd: &mut Etcd,
    boot: &Bootstrap,
) -> Result<HashMap<i64, Record>, EtcdError> {
    let resp = etcd.get_prefix(&boot.history_prefix()).await?;
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            let r: Record = serde_json::from_slice(kv.value()).ok()?;
            Some((kv.mod_revision(), r))
        })
        .collect())
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// `anygate config history -c BOOT`.
pub fn history(conf: &Path, limit: usize) -> ExitCode {
    let (boot, rt) = match bootstrap_and_runtime(conf) {
        Ok(b) => b,
        Err(code) => return code,
    };
    rt.block_on(async {
        let mut etcd = Etcd::new(&boot);
        let (now, _) = match current(&mut etcd, &boot).await {
            Ok(c) => c,
            Err(msg) => return fail(msg),
        };
        let Some(mut kv) = now else {
            return fail(format!("etcd key {} does not exist: nothing was pushed yet", boot.key));
        };
        let records = match records(&mut etcd, &boot).await {
            Ok(r) => r,
            Err(e) => return fail(format!("cannot read the history records: {e}")),
        };
        println!("{:<10} {:<24} {:>8}  {:<12}  {:<24} ACTION", "REVISION", "TIME", "SIZE", "SHA256", "BY");
        let mut shown = 0;
        let end = loop {
            let r = records.get(&kv.mod_revision());
            let sha = sha256_hex(kv.value());
            let mark = if shown == 0 { " (current)" } else { "" };
            println!(
                "{:<10} {:<24} {:>8}  {:<12}  {:<24} {}{mark}",
                kv.mod_revision(),
                r.map_or("-", |r| r.time.as_str()),
                kv.value().len(),
                short(&sha),
                r.map_or("-", |r| r.by.as_str()),
                r.map_or("written outside anygate", |r| r.action.as_str()),
            );
            shown += 1;
            if shown >= limit {
                break format!("(--limit {limit}: older revisions not shown)");
            }
            if kv.create_revision() == kv.mod_revision() {
                break String::new();
            }
            match etcd.get(&boot.key, kv.mod_revision() - 1).await {
                Ok(resp) => match resp.kvs().first() {
                    Some(prev) => kv = prev.clone(),
                    None => break String::new(),
                },
                Err(EtcdError::Compacted(_)) => {
                    break "(older revisions were compacted by etcd: they can no longer be rolled back to)".into()
                }
                Err(e) => return fail(format!("cannot read older revisions: {e}")),
            }
        };
        if !end.is_empty() {
            println!("{end}");
        }
        ExitCode::SUCCESS
    })
}

/// `anygate config get -c BOOT [--revision REV]`: the document on stdout.
pub fn get(conf: &Path, revision: Option<i64>) -> ExitCode {
    let (boot, rt) = match bootstrap_and_runtime(conf) {
        Ok(b) => b,
        Err(code) => return code,
    };
    rt.block_on(async {
        let mut etcd = Etcd::new(&boot);
        let (now, header) = match current(&mut etcd, &boot).await {
            Ok(c) => c,
            Err(msg) => return fail(msg),
        };
        let kv = match (revision, now) {
            (Some(rev), _) => match old_document(&mut etcd, &boot, rev, header).await {
                Ok(kv) => kv,
                Err(msg) => return fail(msg),
            },
            (None, Some(kv)) => kv,
            (None, None) => {
                return fail(format!(
                    "etcd key {} does not exist: nothing was pushed yet",
                    boot.key
                ))
            }
        };
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if out.write_all(kv.value()).and_then(|_| out.flush()).is_err() {
            return ExitCode::from(1);
        }
        eprintln!("etcd key {} revision {}", boot.key, kv.mod_revision());
        ExitCode::SUCCESS
    })
}
