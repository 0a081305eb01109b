//! Where the config comes from: the file itself (SPEC §9, watched by [`crate::reload`]) or,
//! with `config_source.etcd` in it, one etcd key shared by every replica (SPEC §13). [`open`]
//! is the one entry point: it loads the first snapshot and returns what keeps it current.

mod acme;
mod bootstrap;
mod cache;
pub mod cli;
mod etcd;
mod history;
mod watch;

pub use acme::EtcdStore;
pub use bootstrap::{compile_document, Bootstrap, EtcdConfig, SourceConfig, BOOTSTRAP_KEYS};
pub use cache::sha256_hex;

use crate::reload::{Reload, ReloadService, Reloader};
use crate::snapshot::{self, Purpose, Snapshot, Store};
use anygate_plugins::telemetry::Telemetry;
use etcd::Etcd;
use log::{error, info, warn};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use prometheus::IntGauge;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use watch::EtcdWatch;

/// How long a starting replica keeps trying etcd (an election takes a second or two) before
/// it falls back to its cache.
const STARTUP_PATIENCE: Duration = Duration::from_secs(3);

/// What keeps the first snapshot current, once there is a store to publish into.
pub enum Pending {
    File {
        path: PathBuf,
        text: Vec<u8>,
        watch: bool,
    },
    Etcd {
        boot: Arc<Bootstrap>,
        up: IntGauge,
        /// The revision acted on at start.
        revision: i64,
    },
}

/// The running reload machinery.
pub enum Keeper {
    File(Arc<Reloader>),
    Etcd(EtcdWatch),
}

impl Pending {
    pub fn attach(self, store: Arc<Store>) -> Keeper {
        match self {
            Pending::File { path, text, watch } => {
                Keeper::File(Arc::new(Reloader::new(path, store, &text, watch)))
            }
            Pending::Etcd { boot, up, revision } => {
                Keeper::Etcd(EtcdWatch::new(boot, store, up, revision))
            }
        }
    }
}

impl Keeper {
    /// The bootstrap, in cluster mode (ACME then keeps its state in etcd too).
    pub fn cluster(&self) -> Option<Arc<Bootstrap>> {
        match self {
            Keeper::File(_) => None,
            Keeper::Etcd(w) => Some(w.bootstrap()),
        }
    }

    /// What `POST /api/v1/reload` calls.
    pub fn handle(&self) -> Arc<dyn Reload> {
        match self {
            Keeper::File(r) => r.clone(),
            Keeper::Etcd(w) => Arc::new(w.handle()),
        }
    }

    /// Adds the background service that keeps the config current.
    pub fn add_to(self, server: &mut Server) {
        match self {
            Keeper::File(r) => {
                server.add_service(background_service("config reload", ReloadService::new(r)));
            }
            Keeper::Etcd(w) => {
                server.add_service(background_service("config source (etcd)", w));
            }
        }
    }
}

/// `anygate_config_source_up`: 1 while the config source answers (always, for a file).
fn source_up_gauge(telemetry: &Telemetry) -> Result<IntGauge, String> {
    let up = IntGauge::new(
        "anygate_config_source_up",
        "1 while the config source answers (etcd in cluster mode; always 1 for a file).",
    )
    .map_err(|e| format!("cannot set up metrics: {e}"))?;
    telemetry
        .registry
        .register(Box::new(up.clone()))
        .map_err(|e| format!("cannot set up metrics: {e}"))?;
    Ok(up)
}

/// Loads the first snapshot from the file at `path`, or from etcd when the file is a cluster
/// bootstrap (then from its cache when etcd cannot be reached). `Err` is the message to print
/// before refusing to start.
pub fn open(
    path: &Path,
    telemetry: &Arc<Telemetry>,
    watch: bool,
) -> Result<(Snapshot, Pending), String> {
    let up = source_up_gauge(telemetry)?;
    let checked = match bootstrap::read(path, &snapshot::process_env, Purpose::Serve) {
        Some(c) => c,
        None => {
            let (snap, text) =
                crate::server::load_initial(path, telemetry).map_err(|e| e.to_string())?;
            up.set(1);
            let path = path.to_path_buf();
            return Ok((snap, Pending::File { path, text, watch }));
        }
    };
    let boot = Arc::new(checked.bootstrap.map_err(|e| e.to_string())?);
    if !watch {
        warn!("--no-watch has no effect with `config_source`: the etcd key is always watched");
    }
    let (snap, revision, live) = first_load(&boot, telemetry)?;
    up.set(i64::from(live));
    Ok((snap, Pending::Etcd { boot, up, revision }))
}

/// The first snapshot: etcd's document, else the cache's. Returns it, the revision acted on,
/// and whether etcd answered.
fn first_load(
    boot: &Bootstrap,
    telemetry: &Arc<Telemetry>,
) -> Result<(Snapshot, i64, bool), String> {
    let cached = match &boot.cache {
        Some(p) => match cache::read(p, &boot.key) {
            Ok(c) => c,
            Err(msg) => {
                warn!("{msg}: not using it");
                None
            }
        },
        None => None,
    };
    // A runtime for this one read: Pingora starts its own later (after forking into a daemon).
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?
        .block_on(async {
            let mut etcd = Etcd::new(boot);
            let key = boot.key.clone();
            etcd.call_patiently(STARTUP_PATIENCE, move |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await
        });
    let compile = |revision: i64, text: &[u8]| {
        let name = boot.document_name(revision);
        let text = std::str::from_utf8(text)
            .map_err(|_| format!("{name}:1:1: the document is not UTF-8"))?;
        let generation = u64::try_from(revision).unwrap_or(0);
        bootstrap::compile_document(
            boot,
            &name,
            text,
            generation,
            &snapshot::process_env,
            telemetry,
            None,
            Purpose::Serve,
        )
        .snapshot
        .map_err(|e| e.to_string())
    };
    let from_cache = |c: &cache::Cached, why: &str| -> Result<(Snapshot, i64), String> {
        let snap = compile(c.revision, c.document.as_bytes())?;
        warn!(
            "{why}: starting from the cache {} (revision {} of {}, written {})",
            boot.cache.as_deref().unwrap_or(Path::new("")).display(),
            c.revision,
            boot.key,
            c.written
        );
        Ok((snap, c.revision))
    };
    let no_cache = match &boot.cache {
        Some(p) => format!("no usable cache at {}", p.display()),
        None => "no `cache` is set in `config_source.etcd`".to_string(),
    };
    let endpoints = boot.endpoints.join(", ");
    match fetched {
        Ok(resp) => match resp.kvs().first() {
            Some(kv) => {
                let revision = kv.mod_revision();
                match compile(revision, kv.value()) {
                    Ok(snap) => {
                        if let Some(p) = &boot.cache {
                            let same = cached.as_ref().is_some_and(|c| {
                                c.revision == revision && c.document.as_bytes() == kv.value()
                            });
                            let text = String::from_utf8_lossy(kv.value());
                            if !same {
                                if let Err(e) = cache::write(p, &boot.key, revision, &text) {
                                    error!("cannot write the config cache {}: {e}", p.display());
                                }
                            }
                        }
                        info!("config from etcd key {} at revision {revision} ({endpoints})", boot.key);
                        Ok((snap, revision, true))
                    }
                    Err(errors) => match &cached {
                        Some(c) => {
                            error!("{errors}");
                            let why = format!("the document at revision {revision} does not compile");
                            // The watcher goes on from the refused revision, not the cached one.
                            from_cache(c, &why).map(|(s, _)| (s, revision, true))
                        }
                        None => Err(format!(
                            "{errors}\nthe config document in etcd does not compile and there is {no_cache}: refusing to start"
                        )),
                    },
                }
            }
            None => match &cached {
                Some(c) => from_cache(c, &format!("etcd key {} does not exist", boot.key))
                    .map(|(s, r)| (s, r, true)),
                None => Err(format!(
                    "etcd key {} does not exist ({endpoints}) and there is {no_cache}: refusing to start; push a config first: anygate config push -c {} FILE",
                    boot.key,
                    boot.path.display()
                )),
            },
        },
        Err(e) => match &cached {
            Some(c) => from_cache(c, &format!("cannot reach etcd ({e})")).map(|(s, r)| (s, r, false)),
            None => Err(format!(
                "cannot reach etcd at {endpoints}: {e}\nand there is {no_cache}: refusing to start"
            )),
        },
    }
}
