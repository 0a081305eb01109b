//! The running state as one immutable [`Snapshot`], compiled from a [`FileConfig`] off the
//! request path and published with one atomic swap. A request holds its snapshot from start to
//! end.

use crate::config::{ConfigError, ConfigErrors, FileConfig, Item, Mark};
use anygate_plugins::routes::{
    normalize_trigger, Auth, DomainKey, Instance, RouteSpec, RouteTable, Timeouts,
};
use anygate_plugins::telemetry::Telemetry;
use anygate_plugins::{edge_chain, BuildCtx, Chain, Limits, PluginConfig};
use http::HeaderValue;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

pub use crate::store::Store;

mod address;
mod check;
use address::instance_address;
pub use address::parse_instance_address;
pub use check::{check_fixed, compile_offline, compile_with, Compiled, Purpose};

pub const DEFAULT_DOMAIN_SUFFIX: &str = "service.tcloudbase.com";

/// Listener addresses: fixed for the life of the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listeners {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// Pingora settings: fixed for the life of the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    pub threads: usize,
    pub work_stealing: bool,
    pub upstream_keepalive_pool_size: usize,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub upgrade_sock: String,
    pub pid_file: String,
}

/// A custom domain as the admin API lists it (its routes and certificate are elsewhere).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSettings {
    /// Lower-case; `*.parent` for a wildcard.
    pub name: String,
    pub force_https: bool,
}

/// Everything a request needs, compiled and immutable.
pub struct Snapshot {
    pub generation: u64,
    pub source: PathBuf,
    pub env: String,
    pub listeners: Listeners,
    pub server: ServerSettings,
    pub routes: Arc<RouteTable>,
    pub chain: Chain,
    pub plugin_configs: Vec<PluginConfig>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// How client connections wait for their request headers.
    pub front: crate::front::FrontSettings,
    /// The process's metrics, the same for every generation.
    pub telemetry: Arc<Telemetry>,
    /// Certificates by SNI and the `force_https` redirect.
    pub tls: crate::tls::Tls,
    /// The admin API's token and buffer size.
    pub admin: crate::admin::settings::AdminSettings,
    /// The custom domains, in file order.
    pub domains: Vec<DomainSettings>,
    /// Active health checks, by instance id.
    pub health_checks: HashMap<String, crate::health::CheckSettings>,
    /// TCP passthrough (SPEC §14).
    pub streams: crate::streams::Streams,
}

/// Reads environment variables; tests and `check` pass their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Resolves an instance's host name (the system resolver; tests pass their own).
pub(crate) type Resolver<'a> = &'a dyn Fn(&str, u16) -> Result<SocketAddr, String>;

pub(crate) struct Errors<'a> {
    file: &'a FileConfig,
    list: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    purpose: Purpose,
    resolve: Resolver<'a>,
}

impl Errors<'_> {
    fn at(&mut self, mark: Mark, message: impl Into<String>) {
        self.list.push(self.file.error(mark, message));
    }

    fn warn(&mut self, mark: Mark, message: impl Into<String>) {
        self.warnings.push(self.file.error(mark, message));
    }
}

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn listen_addr(
    e: &mut Errors,
    item: &Item<crate::config::model::Listen>,
    key: &str,
    v: &Option<String>,
) -> Option<SocketAddr> {
    let v = v.as_deref()?;
    match v.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            e.at(
                item.mark_of(key),
                format!("invalid listen address `{v}` (write e.g. 0.0.0.0:80 or [::]:80)"),
            );
            None
        }
    }
}

pub fn relative_to(config: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// A secret sent as a header. `env` is the compile's lookup, which answers a stand-in for an
/// unset variable (reported by `check::compile_with`), so only a value a header cannot carry
/// is an error here.
fn secret(e: &mut Errors, env: EnvLookup, var: &str, mark: Mark) -> Option<HeaderValue> {
    match env(var) {
        Some(v) if !v.is_empty() => match HeaderValue::from_str(&v) {
            Ok(h) => Some(h),
            Err(_) => {
                e.at(
                    mark,
                    format!("environment variable `{var}` holds characters a header cannot carry"),
                );
                None
            }
        },
        _ => {
            e.at(mark, format!("environment variable `{var}` is not set"));
            None
        }
    }
}

/// The settings bound at start (listener addresses, Pingora's): in cluster mode they come
/// from the bootstrap file, which is checked on its own.
pub(crate) fn fixed_settings(e: &mut Errors, file: &FileConfig) -> (Listeners, ServerSettings) {
    let l = &file.listen;
    let listeners = Listeners {
        http: listen_addr(e, l, "http", &l.value.http),
        https: listen_addr(e, l, "https", &l.value.https),
        admin: listen_addr(e, l, "admin", &l.value.admin),
    };
    if l.value.http.is_none() && l.value.https.is_none() {
        e.at(l.at, "`listen` needs an `http` (or `https`) address");
    }

    let s = &file.server.value;
    let threads = s
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > 1024 {
        e.at(
            file.server.mark_of("threads"),
            "`server.threads` must be between 1 and 1024",
        );
    }
    let server = ServerSettings {
        threads,
        work_stealing: s.work_stealing.unwrap_or(false),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size.unwrap_or(1024),
        grace_period: s.grace_period.map_or(Duration::from_secs(10), |d| d.0),
        graceful_shutdown_timeout: s
            .graceful_shutdown_timeout
            .map_or(Duration::from_secs(5), |d| d.0),
        upgrade_sock: s
            .upgrade_sock
            .clone()
            .unwrap_or_else(|| "/tmp/anygate_upgrade.sock".into()),
        pid_file: s
            .pid_file
            .clone()
            .unwrap_or_else(|| "/tmp/anygate.pid".into()),
    };
    (listeners, server)
}

/// Checks everything the schema cannot (references, duplicates, addresses, secrets) and
/// builds the snapshot. Every error is reported, sorted by position. Plugins whose settings
/// (and `env`) are the same as in `previous` are taken over from it, with their state.
pub fn compile(
    file: &FileConfig,
    generation: u64,
    env: EnvLookup,
    telemetry: &Arc<Telemetry>,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, ConfigErrors> {
    compile_with(file, generation, env, telemetry, previous, Purpose::Serve).snapshot
}

/// Compiles every section, recording each problem in `e` and going on with the next; the
/// snapshot is only used when `e` ends up empty.
pub(crate) fn build(
    e: &mut Errors,
    file: &FileConfig,
    generation: u64,
    env: EnvLookup,
    telemetry: &Arc<Telemetry>,
    previous: Option<&Snapshot>,
) -> Option<Snapshot> {
    let doc = Mark { line: 1, col: 1 };

    let env_id = match &file.env {
        Some(item) if valid_token(&item.value) => item.value.clone(),
        Some(item) => {
            e.at(
                item.at,
                format!(
                    "`env` `{}` may only use letters, digits, `-`, `_` and `.`",
                    item.value
                ),
            );
            String::new()
        }
        None => {
            e.at(
                doc,
                "`env` is required (the CloudBase environment id, e.g. `env: test-1a2b3c`)",
            );
            String::new()
        }
    };

    let (listeners, server) = fixed_settings(e, file);

    let suffix = match &file.default_domain_suffix {
        Some(item) => {
            let v = item.value.trim_matches('.').to_ascii_lowercase();
            if !valid_hostname(&v) {
                e.at(
                    item.at,
                    format!(
                        "`default_domain_suffix` `{}` is not a domain name",
                        item.value
                    ),
                );
            }
            v
        }
        None => DEFAULT_DOMAIN_SUFFIX.to_string(),
    };

    // Domains.
    let mut domains: HashMap<String, Mark> = HashMap::new();
    let mut domain_list = Vec::new();
    for d in &file.domains {
        let name = d.value.name.to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name).to_string();
        if matches!(name.as_str(), "default" | "*") {
            e.at(
                d.mark_of("name"),
                format!("`{name}` is a reserved domain name (routes use it without declaring it)"),
            );
            continue;
        }
        if !valid_hostname(name.strip_prefix("*.").unwrap_or(&name)) {
            e.at(
                d.mark_of("name"),
                format!("`{}` is not a domain name", d.value.name),
            );
            continue;
        }
        if let Some(first) = domains.get(&name) {
            e.at(
                d.mark_of("name"),
                format!(
                    "domain `{name}` is declared twice (first at line {})",
                    first.line
                ),
            );
            continue;
        }
        domain_list.push(DomainSettings {
            name: name.clone(),
            force_https: d.value.force_https,
        });
        domains.insert(name, d.at);
    }

    let tls = crate::tls::compile(file, &listeners, &mut e.list);
    let admin = crate::admin::settings::compile(file, listeners.admin, env, &mut e.list);

    // Limits and timeouts.
    let lv = &file.limits.value;
    let limits = Limits {
        max_sdk_body: lv
            .max_sdk_body
            .map_or(Limits::default().max_sdk_body, |s| s.0),
        max_body: lv.max_body.map_or(Limits::default().max_body, |s| s.0),
    };
    let tv = &file.timeouts.value;
    let mut timeouts = Timeouts::default();
    let mut front = crate::front::FrontSettings::default();
    if let Some(size) = lv.max_header {
        match usize::try_from(size.0) {
            Ok(n) if (1024..=1 << 20).contains(&n) => front.max_header = n,
            _ => e.at(
                file.limits.mark_of("max_header"),
                "`limits.max_header` must be between 1KB and 1MB (Pingora's own limit)",
            ),
        }
    }
    for (key, v, slot) in [
        (
            "max_connections",
            lv.max_connections,
            &mut front.max_connections,
        ),
        (
            "max_connections_per_ip",
            lv.max_connections_per_ip,
            &mut front.max_connections_per_ip,
        ),
    ] {
        match v {
            Some(0) => e.at(
                file.limits.mark_of(key),
                format!("`limits.{key}` must be at least 1 (leave it out for no limit)"),
            ),
            v => *slot = v,
        }
    }
    for (key, v, slot) in [
        ("connect", tv.connect, &mut timeouts.connect),
        ("sdk", tv.sdk, &mut timeouts.sdk),
        ("http", tv.http, &mut timeouts.http),
        ("client_header", tv.client_header, &mut front.client_header),
        ("keepalive", tv.keepalive, &mut front.keepalive),
    ] {
        if let Some(d) = v {
            if d.0.is_zero() {
                e.at(
                    file.timeouts.mark_of(key),
                    format!("`timeouts.{key}` must be more than 0"),
                );
            } else {
                *slot = d.0;
            }
        }
    }

    // Instances. Each one's problems are all reported; an instance with any is left out of
    // the table, but its id stays known so routes naming it are not reported again.
    let mut instances: Vec<Arc<Instance>> = Vec::new();
    let mut health_checks = HashMap::new();
    let mut instance_marks: HashMap<String, Mark> = HashMap::new();
    for i in &file.instances {
        let v = &i.value;
        let mut ok = true;
        if !valid_token(&v.id) {
            e.at(
                i.mark_of("id"),
                format!(
                    "instance id `{}` may only use letters, digits, `-`, `_` and `.`",
                    v.id
                ),
            );
            ok = false;
        }
        if let Some(first) = instance_marks.get(&v.id) {
            e.at(
                i.mark_of("id"),
                format!(
                    "instance `{}` is declared twice (first at line {})",
                    v.id, first.line
                ),
            );
            continue;
        }
        instance_marks.insert(v.id.clone(), i.at);
        let addr = instance_address(e, i.mark_of("address"), &v.address);
        let kind = v.upstream_type.as_deref().unwrap_or("Lighthouse");
        let upstream_type = match HeaderValue::from_str(kind) {
            Ok(h) if !kind.is_empty() => Some(h),
            _ => {
                e.at(
                    i.mark_of("upstream_type"),
                    format!("`upstream_type` `{kind}` cannot be sent as a header"),
                );
                None
            }
        };
        let origin_secret = match &v.origin_secret_env {
            Some(var) => secret(e, env, var, i.mark_of("origin_secret_env")).map(Some),
            None => Some(None),
        };
        if let Some(hc) = &v.health_check {
            match crate::health::compile_check(file, i, hc, &mut e.list) {
                Some(c) => {
                    health_checks.insert(v.id.clone(), c);
                }
                None => ok = false,
            }
        }
        if let (true, Some(addr), Some(upstream_type), Some(origin_secret)) =
            (ok, addr, upstream_type, origin_secret)
        {
            instances.push(Arc::new(Instance::new(
                v.id.clone(),
                addr,
                upstream_type,
                origin_secret,
                timeouts,
            )));
        }
    }

    let instance_addrs = instances.iter().map(|i| (i.id.clone(), i.addr)).collect();
    let streams = crate::streams::compile(
        file,
        &listeners,
        &instance_addrs,
        timeouts.connect,
        &mut e.list,
    );

    // Routes: the domain, the instance and the path are checked independently.
    let mut specs = Vec::new();
    let mut seen: HashMap<(DomainKey, String), Mark> = HashMap::new();
    for r in &file.routes {
        let v = &r.value;
        let mut ok = true;
        let domain = DomainKey::parse(v.domain.trim_end_matches('.'));
        if let DomainKey::Custom(name) = &domain {
            if !domains.contains_key(name) && !file.incomplete.domains {
                e.at(r.mark_of("domain"), format!("route names domain `{}`, which is not under `domains` (or use `default` or `*`)", v.domain));
                ok = false;
            }
        }
        if !instance_marks.contains_key(&v.instance) {
            if !file.incomplete.instances {
                e.at(
                    r.mark_of("instance"),
                    format!(
                        "route names instance `{}`, which is not under `instances`",
                        v.instance
                    ),
                );
            }
            ok = false;
        }
        let path = match normalize_trigger(&v.path) {
            Ok(p) => p,
            Err(msg) => {
                e.at(r.mark_of("path"), msg);
                continue;
            }
        };
        if let Some(first) = seen.get(&(domain.clone(), path.clone())) {
            e.at(
                r.at,
                format!(
                    "route `{}{}` is declared twice (first at line {})",
                    domain.as_str(),
                    path,
                    first.line
                ),
            );
            continue;
        }
        seen.insert((domain.clone(), path.clone()), r.at);
        // A route to an instance that failed (already reported) stays out of the table.
        if ok && instances.iter().any(|i| i.id == v.instance) {
            specs.push(RouteSpec {
                domain,
                path,
                instance: v.instance.clone(),
                passthrough: v.passthrough,
                auth: v.auth,
            });
        }
    }

    // The table of what compiled, so that the plugins are built and checked even when
    // something above failed.
    let routes = match RouteTable::new(&format!("{env_id}.{suffix}"), instances, specs) {
        Ok(t) => Some(Arc::new(t)),
        Err(err) => {
            e.at(
                doc,
                format!("internal: route table rejected the config: {err:?}"),
            );
            None
        }
    };

    // The chain.
    let (plugin_configs, plugin_items): (Vec<PluginConfig>, Vec<Option<&Item<PluginConfig>>>) =
        match &file.plugins {
            Some(items) => (
                items.iter().map(|i| i.value.clone()).collect(),
                items.iter().map(Some).collect(),
            ),
            None => {
                let edge = edge_chain();
                let n = edge.len();
                (edge, vec![None; n])
            }
        };
    let plugins_mark = file
        .plugins
        .as_ref()
        .and_then(|p| p.first())
        .map_or(doc, |p| p.at);
    if !file.incomplete.plugins
        && !plugin_configs
            .iter()
            .any(|p| matches!(p, PluginConfig::Routing(_)))
    {
        e.at(plugins_mark, "the `plugins` chain needs `routing`");
    }
    // `routing` enforces `auth: required` with the identity `identity` finds.
    let position = |f: fn(&PluginConfig) -> bool| plugin_configs.iter().position(f);
    let identity_at = position(|p| matches!(p, PluginConfig::Identity(_)));
    let routing_at = position(|p| matches!(p, PluginConfig::Routing(_)));
    if let (Some(i), Some(r)) = (identity_at, routing_at) {
        if i > r {
            let mark = plugin_items[i].map_or(doc, |it| it.at);
            e.at(mark, "`identity` must come before `routing` in the chain (routing refuses `auth: required` requests by the identity it finds)");
        }
    }
    let verifies = plugin_configs.iter().any(|p| {
        matches!(p, PluginConfig::Identity(c) if c.mode != anygate_plugins::identity::Mode::None)
    });
    if !verifies && !file.incomplete.plugins {
        for r in file
            .routes
            .iter()
            .filter(|r| r.value.auth == Auth::Required)
        {
            e.at(r.mark_of("auth"), "`auth: required` needs the `identity` plugin in `session` or `trusted_front` mode: nothing else verifies a caller");
        }
    }
    let mut chain = Vec::new();
    if let Some(routes) = &routes {
        let names: Vec<&'static str> = plugin_configs.iter().map(|p| p.name()).collect();
        let mut cx = BuildCtx {
            env: &env_id,
            routes,
            limits,
            env_var: env,
            telemetry,
            config_dir: file.path.parent().unwrap_or(Path::new(".")),
            chain: &names,
            position: 0,
        };
        // A plugin is taken over when its settings, `env` and the chain's shape (which some
        // plugins check at build: what must come before them) are what they were.
        let reusable = |cfg: &PluginConfig| {
            let prev = previous.filter(|p| {
                p.env == env_id
                    && p.routes.default_host() == routes.default_host()
                    && p.plugin_configs
                        .iter()
                        .map(|c| c.name())
                        .eq(names.iter().copied())
            })?;
            let i = prev.plugin_configs.iter().position(|c| c == cfg)?;
            prev.chain.plugins().get(i).cloned()
        };
        for (position, (cfg, item)) in plugin_configs.iter().zip(&plugin_items).enumerate() {
            if let Some(p) = reusable(cfg) {
                chain.push(p);
                continue;
            }
            cx.position = position;
            match cfg.build(&cx) {
                Ok(p) => chain.push(p),
                Err(err) => {
                    let mark = item.map_or(doc, |i| err.key().map_or(i.at, |f| i.mark_of(f)));
                    e.at(mark, format!("plugin `{}`: {}", cfg.name(), err.message));
                }
            }
        }
    }

    let routes = routes?;
    if !e.list.is_empty() {
        return None;
    }
    Some(Snapshot {
        generation,
        source: file.path.clone(),
        env: env_id,
        listeners,
        server,
        routes,
        chain: Chain::new(chain),
        plugin_configs,
        limits,
        timeouts,
        front,
        telemetry: telemetry.clone(),
        tls,
        admin,
        domains: domain_list,
        health_checks,
        streams,
    })
}

#[cfg(test)]
mod tests;
