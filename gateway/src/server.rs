//! Building and running the Pingora server: the proxy service on the public listeners, with
//! the snapshot store behind it.

use crate::admin::Admin;
use crate::config::{self, ConfigErrors};
use crate::echo::Echo;
use crate::front::Front;
use crate::health::probe::ProbeService;
use crate::monitor::TickService;
use crate::proxy::Gateway;
use crate::reload::Reload;
use crate::snapshot::{self, ServerSettings, Snapshot, Store};
use crate::wechat_stub::WechatStub;
use anygate_plugins::telemetry::Telemetry;
use log::{error, info, warn};
use pingora_core::apps::http_app::HttpServer;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::path::Path;
use std::sync::Arc;

/// Plain client connections: no L4 read buffer (Pingora's default is 64 KB per connection,
/// held for the connection's whole life): the front and Pingora's HTTP/1 session read into
/// their own buffers, sized to the request. Writes keep Pingora's one-segment buffer, so a
/// response header and a small body leave in one write.
const PLAIN_L4_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(0),
    write: None,
};

/// TLS client connections: OpenSSL reads records in small pieces, so a read buffer saves
/// system calls, but one the size of a record is enough.
const TLS_L4_BUFFERS: L4BufferSettings = L4BufferSettings {
    read: Some(17 * 1024),
    write: None,
};

/// Process-level switches from the command line (Pingora's `-d`, `-u`, `-t`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    pub daemon: bool,
    pub upgrade: bool,
    pub test: bool,
}

/// The process's metric registry and handles: made once, shared by every generation.
pub fn new_telemetry() -> Result<Arc<Telemetry>, String> {
    Telemetry::new()
        .map(Arc::new)
        .map_err(|e| format!("cannot set up metrics: {e}"))
}

/// Reads, checks and compiles a config file (as generation 1).
pub fn load_snapshot(path: &Path, telemetry: &Arc<Telemetry>) -> Result<Snapshot, ConfigErrors> {
    load_initial(path, telemetry).map(|(snap, _)| snap)
}

/// Like [`load_snapshot`], also returning the bytes it was compiled from.
pub fn load_initial(
    path: &Path,
    telemetry: &Arc<Telemetry>,
) -> Result<(Snapshot, Vec<u8>), ConfigErrors> {
    let unreadable = |message: String| {
        ConfigErrors(vec![config::ConfigError {
            file: path.display().to_string(),
            mark: config::Mark { line: 1, col: 1 },
            message,
        }])
    };
    let bytes =
        std::fs::read(path).map_err(|e| unreadable(format!("cannot read the file: {e}")))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| unreadable("the file is not UTF-8".into()))?;
    let file = config::load_str(path, text)?;
    let snap = snapshot::compile(&file, 1, &snapshot::process_env, telemetry, None)?;
    Ok((snap, bytes))
}

/// `anygate check`: reads and compiles a config file for checking (unset secrets and names
/// that do not resolve here are warnings).
pub fn check_file(path: &Path, telemetry: &Arc<Telemetry>) -> snapshot::Compiled {
    let failed = |errors| snapshot::Compiled {
        snapshot: Err(errors),
        warnings: Vec::new(),
    };
    let file = match config::load_file(path) {
        Ok(f) => f,
        Err(errors) => return failed(errors),
    };
    snapshot::compile_with(
        &file,
        1,
        &snapshot::process_env,
        telemetry,
        None,
        snapshot::Purpose::Check,
    )
}

/// Reads, checks and compiles config text (the demo's embedded config).
pub fn snapshot_from_str(
    name: &Path,
    text: &str,
    generation: u64,
    telemetry: &Arc<Telemetry>,
) -> Result<Snapshot, ConfigErrors> {
    let file = config::load_str(name, text)?;
    snapshot::compile(&file, generation, &snapshot::process_env, telemetry, None)
}

fn secs_ceil(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn server_conf(s: &ServerSettings, flags: Flags) -> ServerConf {
    ServerConf {
        daemon: flags.daemon,
        threads: s.threads,
        work_stealing: s.work_stealing,
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        grace_period_seconds: Some(secs_ceil(s.grace_period)),
        graceful_shutdown_timeout_seconds: Some(secs_ceil(s.graceful_shutdown_timeout)),
        upgrade_sock: s.upgrade_sock.clone(),
        pid_file: s.pid_file.clone(),
        ..ServerConf::default()
    }
}

/// A Pingora server hosting the gateway on `store`'s snapshot; `echo` lets the demo add its
/// echo upstream, `keeper` keeps the config current (the file's watcher, or etcd's).
pub fn build(
    store: Arc<Store>,
    flags: Flags,
    echo: Option<&str>,
    keeper: Option<crate::source::Keeper>,
) -> Server {
    let first = store.load();
    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        test: flags.test,
        ..Opt::default()
    };
    let settings = first.server.clone();
    let listeners = first.listeners.clone();
    info!(
        "config {} generation {}: chain [{}], {} instances, {} routes",
        first.source.display(),
        first.generation,
        first.chain.names().join(", "),
        first.routes.instances().count(),
        first.routes.routes().len(),
    );
    let telemetry = first.telemetry.clone();
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&settings, flags));
    server.bootstrap();

    let mut gateway = pingora_proxy::http_proxy(&server.configuration, Gateway::new(store.clone()));
    // Pingora's own answer to CONNECT is a bare 405; let it reach `target::screen`, which
    // refuses it in SPEC §8's shape with `Allow` (nothing in anygate tunnels).
    let mut options = pingora_core::apps::HttpServerOptions::default();
    options.allow_connect_method_proxying = true;
    gateway.server_options = Some(options);
    let mut proxy = Service::new("anygate".to_string(), Front::new(gateway, store.clone()));
    if let Some(addr) = listeners.http {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(PLAIN_L4_BUFFERS));
        info!("listening for HTTP on {addr}");
    }
    if let Some(addr) = listeners.https {
        match crate::tls::listener_settings(store.clone()) {
            Ok(settings) => {
                proxy.add_listener(
                    ListenerConfig::tcp(addr.to_string())
                        .tls(settings)
                        .l4_buffer(TLS_L4_BUFFERS),
                );
                info!("listening for HTTPS on {addr} (certificates by SNI, HTTP/2 by ALPN)");
            }
            Err(e) => {
                log::error!("cannot set up the HTTPS listener on {addr}: {e}");
                std::process::exit(1);
            }
        }
    }
    server.add_service(proxy);
    add_acme(
        &mut server,
        &telemetry,
        &store,
        keeper.as_ref().and_then(|k| k.cluster()),
    );
    crate::streams::add_services(&mut server, &store);
    add_admin(
        &mut server,
        listeners.admin,
        telemetry,
        store.clone(),
        keeper.as_ref().map(|k| k.handle()),
    );
    server.add_service(background_service(
        "health checks",
        ProbeService::new(store.clone()),
    ));

    server.add_service(background_service("drain", crate::drain::DrainWatch));
    if let Some(k) = keeper {
        k.add_to(&mut server);
    }

    if let Some(addr) = echo {
        let mut svc = Service::new("echo".to_string(), HttpServer::new_app(Echo));
        svc.add_tcp(addr);
        info!("echo upstream on {addr}");
        server.add_service(svc);
    }
    server
}

/// The ACME service (it idles while no domain has `tls: acme`, and wakes on the reload that
/// adds one) and the certificate metrics.
fn add_acme(
    server: &mut Server,
    telemetry: &Telemetry,
    store: &Arc<Store>,
    cluster: Option<Arc<crate::source::Bootstrap>>,
) {
    let registry = &telemetry.registry;
    match crate::tls::CertificateMetrics::new(store.clone()) {
        Ok(m) => {
            if let Err(e) = registry.register(Box::new(m)) {
                error!("cannot register the certificate metrics: {e}");
            }
        }
        Err(e) => error!("cannot make the certificate metrics: {e}"),
    }
    match crate::acme::AcmeService::new(store.clone(), registry) {
        Ok(acme) => {
            let acme = acme.in_cluster(cluster);
            acme.preload();
            server.add_service(background_service("acme", acme));
        }
        Err(e) => error!("ACME disabled: cannot register its metrics: {e}"),
    }
}

/// The admin listener on `listen.admin`, with the ticker behind its traffic stream and
/// passive health; none when it is not set.
fn add_admin(
    server: &mut Server,
    addr: Option<std::net::SocketAddr>,
    telemetry: Arc<Telemetry>,
    store: Arc<Store>,
    reloader: Option<Arc<dyn Reload>>,
) {
    let Some(addr) = addr else {
        info!("no admin listener (`listen.admin` is not set): no /metrics, /healthz, /readyz, no console");
        return;
    };
    server.add_service(background_service(
        "traffic ticker",
        TickService::new(store.clone()),
    ));
    let admin = match Admin::new(telemetry, store, reloader) {
        Ok(a) => a,
        Err(e) => {
            error!("admin listener disabled: cannot register the config metrics: {e}");
            return;
        }
    };
    if !addr.ip().is_loopback() {
        warn!("the admin listener {addr} is not on a loopback address: its API and /metrics need the admin token");
    }
    let mut svc = Service::new("admin".to_string(), admin);
    svc.threads = Some(1);
    svc.add_tcp(&addr.to_string());
    info!(
        "admin listener (console at http://{addr}/, /api/v1/, /metrics /healthz /readyz) on {addr}"
    );
    server.add_service(svc);
}

/// `anygate echo --listen ADDR`.
pub fn run_echo(addr: &str, threads: usize) -> ! {
    run_app(addr, threads, "echo upstream", HttpServer::new_app(Echo))
}

/// `anygate wechat-stub --listen ADDR`.
pub fn run_wechat_stub(addr: &str) -> ! {
    let name = "stand-in jscode2session (codes `test:OPENID`)";
    run_app(addr, 1, name, HttpServer::new_app(WechatStub))
}

fn run_app<A: pingora_core::apps::http_app::ServeHttp + Send + Sync + 'static>(
    addr: &str,
    threads: usize,
    what: &str,
    app: HttpServer<A>,
) -> ! {
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut svc = Service::new(what.to_string(), app);
    svc.add_tcp(addr);
    server.add_service(svc);
    info!("{what} on {addr}");
    server.run_forever()
}
