//! Cluster mode (SPEC §13) against real servers: etcd (one member, or three for the faults)
//! holding the config document, several anygate replicas watching it, `anygate config
//! push | history | rollback`, and the shared rate limit on a real redis-server.

#[path = "../common/mod.rs"]
mod common;

mod acme;
#[path = "../acme/client.rs"]
mod acme_client;
mod bootstrap;
mod documents;
mod faults;
// Shared with tests/acme (this binary does not restart pebble or set DNS records).
#[allow(dead_code)]
#[path = "../acme/pebble.rs"]
mod pebble;
mod replica;
mod servers;
mod shared_limit;

use common::gateway::run_anygate_env;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The etcd key every test uses.
pub const KEY: &str = "/anygate/config";

/// A replica's bootstrap file: its own listeners, the cluster's etcd, a cache next to it.
pub fn bootstrap(endpoints: &[String]) -> String {
    format!(
        r#"listen: {{ http: "@HTTP@", admin: "@ADMIN@" }}
server: {{ threads: 2, grace_period: 0s, graceful_shutdown_timeout: 1s, upgrade_sock: "@DIR@/upgrade.sock", pid_file: "@DIR@/anygate.pid" }}
config_source:
  etcd:
    endpoints: [{}]
    key: {KEY}
    cache: config.cache
"#,
        endpoints.join(", ")
    )
}

/// Version `v` of the config document: one route, `/v<v>`, to `upstream`.
pub fn doc(v: u32, upstream: SocketAddr) -> String {
    format!(
        r#"env: cluster-test
instances:
  - {{ id: app, address: "{upstream}" }}
routes:
  - {{ domain: "*", path: /v{v}, instance: app }}
"#
    )
}

/// The operator's side: a bootstrap file of their own, and the `anygate config` commands.
pub struct Operator {
    dir: tempfile::TempDir,
    pub boot: PathBuf,
    docs: std::sync::atomic::AtomicUsize,
    /// Environment variables for the commands (etcd credentials).
    pub env: Vec<(String, String)>,
}

impl Operator {
    pub fn new(endpoints: &[String]) -> Operator {
        Operator::with_bootstrap(&bootstrap(endpoints))
    }

    /// With a bootstrap file of this template (its listeners are not used).
    pub fn with_bootstrap(template: &str) -> Operator {
        let dir = tempfile::Builder::new()
            .prefix("anygate-operator-")
            .tempdir()
            .expect("temp dir");
        let boot = dir.path().join("boot.yaml");
        let text = template
            .replace("@HTTPS@", "127.0.0.1:3")
            .replace("@HTTP@", "127.0.0.1:1")
            .replace("@ADMIN@", "127.0.0.1:2")
            .replace("@DIR@", &dir.path().display().to_string());
        std::fs::write(&boot, text).expect("write boot.yaml");
        Operator {
            dir,
            boot,
            docs: Default::default(),
            env: Vec::new(),
        }
    }

    /// `anygate config ARGS -c boot.yaml`: (exit code, stdout, stderr).
    pub fn config(&self, args: &[&str]) -> (i32, String, String) {
        let mut argv: Vec<&OsStr> = vec!["config".as_ref()];
        argv.extend(args.iter().map(|a| a.as_ref() as &OsStr));
        argv.extend(["-c".as_ref(), self.boot.as_os_str()]);
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        run_anygate_env(&argv, &env, &[], DEADLINE)
    }

    /// Writes `doc` to a new file and pushes it with `args`.
    pub fn push(&self, doc: &str, args: &[&str]) -> (i32, String, String) {
        let n = self.docs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.path().join(format!("doc-{n}.yaml"));
        std::fs::write(&path, doc).expect("write doc");
        let path = path.display().to_string();
        let mut argv = vec!["push", path.as_str()];
        argv.extend(args);
        self.config(&argv)
    }

    /// Pushes `doc`, which must succeed; returns the new revision.
    pub fn push_ok(&self, doc: &str) -> i64 {
        let (code, out, err) = self.push(doc, &[]);
        assert_eq!(code, 0, "push failed:\n{out}\n{err}");
        revision_in(&out)
    }

    /// The key's current revision (`config get`).
    pub fn revision(&self) -> i64 {
        let (code, _, err) = self.config(&["get"]);
        assert_eq!(code, 0, "config get failed: {err}");
        let line = err.lines().last().unwrap_or_default();
        line.rsplit(' ')
            .next()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no revision in {err:?}"))
    }
}

/// The new revision in a push or rollback's output (`...: revision N (was M)`).
pub fn revision_in(out: &str) -> i64 {
    out.split(": revision ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {out:?}"))
}
