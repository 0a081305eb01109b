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
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

pub use crate::store::Store;

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
    /// The process's metrics, the same for every generation.
    pub telemetry: Arc<Telemetry>,
    /// Certificates by SNI and the `force_https` redirect.
    pub tls: crate::tls::Tls,
}

/// Reads environment variables; tests and `check` pass their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

struct Errors<'a> {
    file: &'a FileConfig,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn at(&mut self, mark: Mark, message: impl Into<String>) {
        self.list.push(self.file.error(mark, message));
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

/// `10.0.0.5` (port 80), `10.0.0.5:8080`, `[::1]:8080`, `::1`, `backend.local:8080`.
/// Names are resolved once, when the config is loaded.
pub fn parse_instance_address(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 80));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("invalid port in address `{s}`"))?,
        ),
        None => (s, 80),
    };
    if !valid_hostname(host) {
        return Err(format!(
            "invalid address `{s}` (write an IP, IP:port or host:port)"
        ));
    }
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("address `{s}` resolves to nothing")),
        Err(e) => Err(format!("cannot resolve `{host}`: {e}")),
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
    let mut e = Errors {
        file,
        list: file.parse_errors.clone(),
    };
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

    let l = &file.listen;
    let listeners = Listeners {
        http: listen_addr(&mut e, l, "http", &l.value.http),
        https: listen_addr(&mut e, l, "https", &l.value.https),
        admin: listen_addr(&mut e, l, "admin", &l.value.admin),
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
        work_stealing: s.work_stealing.unwrap_or(true),
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
        domains.insert(name, d.at);
    }

    let tls = crate::tls::compile(file, &listeners, &mut e.list);

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
    for (key, v, slot) in [
        ("connect", tv.connect, &mut timeouts.connect),
        ("sdk", tv.sdk, &mut timeouts.sdk),
        ("http", tv.http, &mut timeouts.http),
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

    // Instances.
    let mut instances: Vec<Arc<Instance>> = Vec::new();
    let mut instance_marks: HashMap<String, Mark> = HashMap::new();
    for i in &file.instances {
        let v = &i.value;
        if !valid_token(&v.id) {
            e.at(
                i.mark_of("id"),
                format!(
                    "instance id `{}` may only use letters, digits, `-`, `_` and `.`",
                    v.id
                ),
            );
            continue;
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
        let addr = match parse_instance_address(&v.address) {
            Ok(a) => a,
            Err(msg) => {
                e.at(i.mark_of("address"), msg);
                continue;
            }
        };
        let kind = v.upstream_type.as_deref().unwrap_or("Lighthouse");
        let upstream_type = match HeaderValue::from_str(kind) {
            Ok(h) if !kind.is_empty() => h,
            _ => {
                e.at(
                    i.mark_of("upstream_type"),
                    format!("`upstream_type` `{kind}` cannot be sent as a header"),
                );
                continue;
            }
        };
        let origin_secret = match &v.origin_secret_env {
            Some(var) => match secret(&mut e, env, var, i.mark_of("origin_secret_env")) {
                Some(s) => Some(s),
                None => continue,
            },
            None => None,
        };
        instances.push(Arc::new(Instance::new(
            v.id.clone(),
            addr,
            upstream_type,
            origin_secret,
            timeouts,
        )));
    }

    // Routes.
    let mut specs = Vec::new();
    let mut seen: HashMap<(DomainKey, String), Mark> = HashMap::new();
    for r in &file.routes {
        let v = &r.value;
        let domain = DomainKey::parse(v.domain.trim_end_matches('.'));
        if let DomainKey::Custom(name) = &domain {
            if !domains.contains_key(name) && !file.incomplete.domains {
                e.at(r.mark_of("domain"), format!("route names domain `{}`, which is not under `domains` (or use `default` or `*`)", v.domain));
                continue;
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
            continue;
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
        specs.push(RouteSpec {
            domain,
            path,
            instance: v.instance.clone(),
            passthrough: v.passthrough,
            auth: v.auth,
        });
    }

    let mut routes = None;
    let instance_count = instances.len();
    if instance_count == instance_marks.len() {
        match RouteTable::new(&format!("{env_id}.{suffix}"), instances, specs) {
            Ok(t) => routes = Some(Arc::new(t)),
            Err(err) => e.at(
                doc,
                format!("internal: route table rejected the config: {err:?}"),
            ),
        }
    }

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
    if let (Some(routes), true) = (&routes, e.list.is_empty()) {
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

    let mut list = e.list;
    if !list.is_empty() {
        list.sort_by_key(|x| (x.mark.line, x.mark.col));
        list.dedup();
        return Err(ConfigErrors(list));
    }
    let Some(routes) = routes else {
        return Err(ConfigErrors(vec![
            file.error(doc, "internal: no route table")
        ]));
    };
    Ok(Snapshot {
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
        telemetry: telemetry.clone(),
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn build(text: &str, generation: u64, previous: Option<&Snapshot>) -> Snapshot {
        let file = load_str(Path::new("t.yaml"), text).unwrap();
        compile(
            &file,
            generation,
            &|_| None,
            &crate::server::new_telemetry().unwrap(),
            previous,
        )
        .unwrap()
    }

    const BASE: &str = "env: e\nlisten: { http: \"127.0.0.1:1\" }\ninstances: [{ id: a, address: \"127.0.0.1:2\" }]\nroutes: [{ domain: \"*\", path: ROUTE, instance: a }]\nplugins:\n  - name: request_id\n  - name: routing\n  - name: forwarded_for\n    trusted_proxies: [TRUSTED]\n  - name: upstream_info\n";

    fn text(route: &str, trusted: &str) -> String {
        BASE.replace("ROUTE", route).replace("TRUSTED", trusted)
    }

    #[test]
    fn unchanged_plugins_are_reused_and_changed_ones_rebuilt() {
        let first = build(&text("/a", "10.0.0.0/8"), 1, None);
        // New routes, same plugin settings: every plugin is the same object.
        let second = build(&text("/b", "10.0.0.0/8"), 2, Some(&first));
        for (a, b) in first.chain.plugins().iter().zip(second.chain.plugins()) {
            assert!(Arc::ptr_eq(a, b), "{} was rebuilt", a.name());
        }
        assert_eq!(second.routes.routes()[0].path, "/b");
        // forwarded_for's settings changed: it alone is rebuilt.
        let third = build(&text("/b", "192.168.0.0/16"), 3, Some(&second));
        for (a, b) in second.chain.plugins().iter().zip(third.chain.plugins()) {
            assert_eq!(
                Arc::ptr_eq(a, b),
                a.name() != "forwarded_for",
                "{}",
                a.name()
            );
        }
        // A different env rebuilds everything.
        let other_env = text("/b", "192.168.0.0/16").replace("env: e", "env: f");
        let fourth = build(&other_env, 4, Some(&third));
        for (a, b) in third.chain.plugins().iter().zip(fourth.chain.plugins()) {
            assert!(!Arc::ptr_eq(a, b), "{}", a.name());
        }
    }
}
