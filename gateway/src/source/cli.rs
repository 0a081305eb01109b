//! `anygate config push | history | rollback | get` (SPEC §13): the operator's side of the
//! etcd key. A push is validated like `anygate check`, then written in one transaction with
//! a compare-and-swap on the key's `mod_revision` and a history record (etcd keeps no
//! timestamps): `<key>/history/<time>-<id>`, whose own `mod_revision` is the revision it
//! describes ([`super::history`] reads them).

use super::bootstrap::{self, compile_document, Bootstrap};
use super::cache::sha256_hex;
use super::etcd::{Etcd, EtcdError};
pub use super::history::{get, history};
use super::history::{records, Record};
use crate::snapshot::{self, Purpose};
use anygate_plugins::telemetry::Telemetry;
use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse,
};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a command keeps trying while the cluster elects a leader.
const PATIENCE: Duration = Duration::from_secs(6);
/// History records kept; older ones are dropped by the next push.
const KEEP_RECORDS: usize = 500;

pub(super) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("{msg}");
    ExitCode::from(1)
}

/// The bootstrap file, checked (its etcd credentials must be set to talk to etcd).
pub(super) fn bootstrap(conf: &Path) -> Result<Bootstrap, ExitCode> {
    match bootstrap::read(conf, &snapshot::process_env, Purpose::Serve) {
        Some(c) => c.bootstrap.map_err(fail),
        None => Err(fail(format!(
            "{}: no `config_source` here: `anygate config` works on the bootstrap file of a cluster (SPEC §13)",
            conf.display()
        ))),
    }
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start a runtime: {e}")))
}

/// The bootstrap file and a runtime: what every `anygate config` command that talks to etcd
/// starts with.
pub(super) fn bootstrap_and_runtime(
    conf: &Path,
) -> Result<(Bootstrap, tokio::runtime::Runtime), ExitCode> {
    Ok((bootstrap(conf)?, runtime()?))
}

/// Validates a document like `anygate check`, printing what check prints.
fn validate(boot: &Bootstrap, name: &str, text: &str) -> bool {
    let telemetry = match Telemetry::new() {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("cannot set up metrics: {e}");
            return false;
        }
    };
    let checked = compile_document(
        boot,
        name,
        text,
        1,
        &snapshot::process_env,
        &telemetry,
        None,
        Purpose::Check,
    );
    let errors = checked
        .snapshot
        .as_ref()
        .err()
        .map(|e| e.0.clone())
        .unwrap_or_default();
    let mut lines: Vec<(String, (usize, usize))> = errors
        .iter()
        .map(|e| (e.to_string(), (e.mark.line, e.mark.col)))
        .chain(checked.warnings.iter().map(|w| {
            let text = format!(
                "{}:{}:{}: warning: {}",
                w.file, w.mark.line, w.mark.col, w.message
            );
            (text, (w.mark.line, w.mark.col))
        }))
        .collect();
    lines.sort_by_key(|(_, at)| *at);
    for (line, _) in &lines {
        eprintln!("{line}");
    }
    match &checked.snapshot {
        Ok(snap) => {
            eprintln!(
                "{name}: ok (chain: {}; {} instances, {} routes)",
                snap.chain.names().join(", "),
                snap.routes.instances().count(),
                snap.routes.routes().len()
            );
            true
        }
        Err(_) => false,
    }
}

fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host}")
}

/// Writes `text` to the key with its history record; with `base`, only if the key is still
/// at that revision. Returns the new revision.
async fn write(
    etcd: &mut Etcd,
    boot: &Bootstrap,
    text: &str,
    base: Option<i64>,
    action: String,
) -> Result<i64, String> {
    let record = Record {
        time: anygate_plugins::access_log::rfc3339_millis(SystemTime::now()),
        by: who(),
        action,
        size: text.len(),
        sha256: sha256_hex(text.as_bytes()),
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let record_key = format!(
        "{}{nanos:020}-{:08x}",
        boot.history_prefix(),
        fastrand::u32(..)
    );
    let record_json = serde_json::to_string(&record).map_err(|e| e.to_string())?;
    let ops = vec![
        TxnOp::put(boot.key.clone(), text, None),
        TxnOp::put(record_key.clone(), record_json, None),
    ];
    let txn = match base {
        Some(rev) => Txn::new()
            .when(vec![Compare::mod_revision(
                boot.key.clone(),
                CompareOp::Equal,
                rev,
            )])
            .and_then(ops)
            .or_else(vec![
                TxnOp::get(boot.key.clone(), None),
                TxnOp::get(record_key.clone(), None),
            ]),
        None => Txn::new().and_then(ops),
    };
    let resp = etcd.txn(txn, PATIENCE).await.map_err(|e| {
        format!(
            "cannot write etcd key {}: {e}\n(if etcd timed out, the write may still have happened: see `anygate config history -c {}`)",
            boot.key,
            boot.path.display()
        )
    })?;
    let revision = resp.header().map_or(0, |h| h.revision());
    if resp.succeeded() {
        prune(etcd, boot).await;
        return Ok(revision);
    }
    // Lost the compare-and-swap: say who won, unless the winner was this very push (an
    // attempt that timed out on one member had committed: its record is there).
    let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(g) => Some(g.kvs().first().cloned()),
        _ => None,
    });
    let (now, ours) = (gets.next().flatten(), gets.next().flatten());
    if let Some(record) = ours {
        return Ok(record.mod_revision());
    }
    let base = base.unwrap_or(0);
    match now {
        Some(kv) => {
            let records = records(etcd, boot).await.unwrap_or_default();
            let by = match records.get(&kv.mod_revision()) {
                Some(r) => format!(" ({} by {} at {})", r.action, r.by, r.time),
                None => String::new(),
            };
            Err(format!(
                "refused: etcd key {} changed since revision {base}: it is now at revision {}{by}.\nNothing was written. Review the change (`anygate config get -c {conf}`, `anygate config history -c {conf}`), then push again with --expect-revision {}, or overwrite it with --force.",
                boot.key,
                kv.mod_revision(),
                kv.mod_revision(),
                conf = boot.path.display(),
            ))
        }
        None => Err(format!(
            "refused: etcd key {} changed since revision {base}: it does not exist (deleted?). Nothing was written; push with --force to create it again.",
            boot.key
        )),
    }
}

/// Drops history records beyond the newest [`KEEP_RECORDS`] (best effort).
async fn prune(etcd: &mut Etcd, boot: &Bootstrap) {
    let prefix = boot.history_prefix();
    let keys = etcd
        .call(|mut c| {
            let prefix = prefix.clone();
            async move {
                c.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await
            }
        })
        .await;
    let Ok(keys) = keys else { return };
    let mut names: Vec<Vec<u8>> = keys.kvs().iter().map(|kv| kv.key().to_vec()).collect();
    if names.len() <= KEEP_RECORDS {
        return;
    }
    names.sort();
    let first_kept = names[names.len() - KEEP_RECORDS].clone();
    let prefix = boot.history_prefix();
    let _ = etcd
        .call(move |mut c| {
            let (from, to) = (prefix.clone(), first_kept.clone());
            async move {
                c.delete(from, Some(DeleteOptions::new().with_range(to)))
                    .await
            }
        })
        .await;
}

/// The key now: its value and revision (0 when it does not exist).
pub(super) async fn current(
    etcd: &mut Etcd,
    boot: &Bootstrap,
) -> Result<(Option<KeyValue>, i64), String> {
    let key = boot.key.clone();
    let resp = etcd
        .call_patiently(PATIENCE, move |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await
        .map_err(|e| {
            format!(
                "cannot read etcd key {} at {}: {e}",
                boot.key,
                boot.endpoints.join(", ")
            )
        })?;
    let header = resp.header().map_or(0, |h| h.revision());
    Ok((resp.kvs().first().cloned(), header))
}

/// `anygate config push -c BOOT FILE`.
pub fn push(conf: &Path, file: &Path, force: bool, expect: Option<i64>, dry_run: bool) -> ExitCode {
    let boot = match bootstrap(conf) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let text = match std::fs::read(file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => return fail(format!("{}:1:1: the file is not UTF-8", file.display())),
        },
        Err(e) => return fail(format!("{}:1:1: cannot read the file: {e}", file.display())),
    };
    if dry_run {
        // Validation only, without etcd (a CI job can check a document offline).
        if !validate(&boot, &file.display().to_string(), &text) {
            return ExitCode::from(1);
        }
        println!("{}: valid; not pushed (--dry-run)", file.display());
        return ExitCode::SUCCESS;
    }
    let rt = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    rt.block_on(async {
        let mut etcd = Etcd::new(&boot);
        // The revision this push is based on, read before validating: whoever writes in
        // between makes the compare-and-swap fail.
        let (now, _) = match current(&mut etcd, &boot).await {
            Ok(c) => c,
            Err(msg) => return fail(msg),
        };
        let now_rev = now.as_ref().map_or(0, |kv| kv.mod_revision());
        if !validate(&boot, &file.display().to_string(), &text) {
            return fail(format!("{}: not pushed", file.display()));
        }
        let base = expect.unwrap_or(now_rev);
        if now.as_ref().is_some_and(|kv| kv.value() == text.as_bytes()) && base == now_rev {
            println!(
                "etcd key {} already holds this document (revision {now_rev}): nothing pushed",
                boot.key
            );
            return ExitCode::SUCCESS;
        }
        let action = if force { "push --force" } else { "push" };
        match write(
            &mut etcd,
            &boot,
            &text,
            (!force).then_some(base),
            action.into(),
        )
        .await
        {
            Ok(rev) => {
                println!(
                    "pushed {} to etcd key {}: revision {rev} (was {})",
                    file.display(),
                    boot.key,
                    match now_rev {
                        0 => "absent".to_string(),
                        r => r.to_string(),
                    }
                );
                ExitCode::SUCCESS
            }
            Err(msg) => fail(msg),
        }
    })
}

/// `anygate config rollback -c BOOT REV`.
pub fn rollback(conf: &Path, revision: i64, force: bool) -> ExitCode {
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
        let now_rev = now.as_ref().map_or(0, |kv| kv.mod_revision());
        let old = match old_document(&mut etcd, &boot, revision, header).await {
            Ok(kv) => kv,
            Err(msg) => return fail(msg),
        };
        let text = match std::str::from_utf8(old.value()) {
            Ok(t) => t.to_string(),
            Err(_) => return fail(format!("{}:1:1: the document is not UTF-8", boot.document_name(revision))),
        };
        if !validate(&boot, &boot.document_name(revision), &text) {
            return fail(format!("revision {revision} does not pass today's checks: not rolled back"));
        }
        if now.as_ref().is_some_and(|kv| kv.value() == old.value()) {
            println!("etcd key {} already holds the document of revision {revision} (revision {now_rev}): nothing to roll back", boot.key);
            return ExitCode::SUCCESS;
        }
        let action = format!("rollback to {revision}");
        match write(&mut etcd, &boot, &text, (!force).then_some(now_rev), action).await {
            Ok(rev) => {
                println!(
                    "rolled etcd key {} back to the document of revision {revision}: revision {rev} (was {now_rev})",
                    boot.key
                );
                ExitCode::SUCCESS
            }
            Err(msg) => fail(msg),
        }
    })
}

/// The key as written at `revision`, which must be one of its revisions.
pub(super) async fn old_document(
    etcd: &mut Etcd,
    boot: &Bootstrap,
    revision: i64,
    header: i64,
) -> Result<KeyValue, String> {
    let history = format!(
        "`anygate config history -c {}` lists its revisions",
        boot.path.display()
    );
    if revision <= 0 || revision > header {
        return Err(format!("revision {revision} is not a revision of etcd key {} (etcd is at revision {header}); {history}", boot.key));
    }
    match etcd.get(&boot.key, revision).await {
        Ok(resp) => match resp.kvs().first() {
            Some(kv) if kv.mod_revision() == revision => Ok(kv.clone()),
            Some(kv) => Err(format!(
                "revision {revision} did not change etcd key {} (the key then held revision {}); {history}",
                boot.key,
                kv.mod_revision()
            )),
            None => Err(format!("etcd key {} did not exist at revision {revision}; {history}", boot.key)),
        },
        Err(EtcdError::Compacted(_)) => Err(format!(
            "revision {revision} of etcd key {} was compacted away by etcd: it cannot be restored; {history}",
            boot.key
        )),
        Err(e) => Err(format!("cannot read revision {revision} of etcd key {}: {e}", boot.key)),
    }
}

/// `anygate check` on a bootstrap file: checks it (the document is checked by
/// `config push --dry-run`). `None` when the file is not a bootstrap file.
pub fn check_bootstrap(conf: &Path, strict: bool) -> Option<ExitCode> {
    let checked = bootstrap::read(conf, &snapshot::process_env, Purpose::Check)?;
    let mut errors = checked
        .bootstrap
        .as_ref()
        .err()
        .map(|e| e.0.clone())
        .unwrap_or_default();
    let mut warnings = checked.warnings;
    if strict {
        errors.append(&mut warnings);
        errors.sort_by_key(|e| (e.mark.line, e.mark.col));
    }
    for e in &errors {
        eprintln!("{e}");
    }
    for w in &warnings {
        eprintln!(
            "{}:{}:{}: warning: {}",
            w.file, w.mark.line, w.mark.col, w.message
        );
    }
    match (&checked.bootstrap, errors.is_empty()) {
        (Ok(b), true) => {
            println!(
                "{}: ok (bootstrap: config document in etcd key {} at {}; check a document with `anygate config push -c {} --dry-run FILE`)",
                conf.display(),
                b.key,
                b.endpoints.join(", "),
                conf.display()
            );
            Some(ExitCode::SUCCESS)
        }
        _ => Some(ExitCode::from(1)),
    }
}
