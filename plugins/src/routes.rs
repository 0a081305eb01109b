//! The compiled routing table of SPEC §4: instances by id, domains by host, trigger paths by
//! segment. Lookups cost the same with one route or ten thousand.

use crate::handles::{Handles, InstanceSeries, Series};
use ahash::RandomState;
use http::HeaderValue;
use pingora_core::upstreams::peer::HttpPeer;
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

type Map<K, V> = HashMap<K, V, RandomState>;

/// Upstream timeouts (SPEC §3 `timeouts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub sdk: Duration,
    pub http: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            sdk: Duration::from_secs(15),
            http: Duration::from_secs(60),
        }
    }
}

/// A cloud server anygate forwards to.
pub struct Instance {
    pub id: String,
    /// Whether `id` is written into a JSON string as is (the access log's check, made once).
    pub id_plain: bool,
    pub addr: SocketAddr,
    /// `X-Cloudbase-Upstream-Type`.
    pub upstream_type: HeaderValue,
    /// `X-AnyService-Authorization`, when the instance has an origin secret.
    pub origin_secret: Option<HeaderValue>,
    /// Connect, SDK and HTTP read timeouts (SDK and HTTP entries differ only in the latter).
    pub timeouts: Timeouts,
    /// This instance's metric handles, resolved by the first request recorded against it.
    pub series: Handles<InstanceSeries>,
    /// The peers of HTTP-access and SDK requests (`peer`), built from `addr` and `timeouts`
    /// when the instance is.
    peers: [Arc<HttpPeer>; 2],
}

impl Instance {
    /// The peer for a request of `entry` (SDK calls have their own read timeout): one of the
    /// two built with the instance, shared. Building a peer for each request cost about 380
    /// instructions (built, boxed, dropped) and wrote a fresh block of memory per request.
    pub fn peer(&self, sdk: bool) -> Arc<HttpPeer> {
        self.peers[usize::from(sdk)].clone()
    }
}

/// An instance's peer: its address, the connect timeout, and `read` as the read and write
/// timeouts (one per entry kind).
fn build_peer(addr: SocketAddr, timeouts: &Timeouts, read: Duration) -> Arc<HttpPeer> {
    let mut p = HttpPeer::new(addr, false, String::new());
    p.options.connection_timeout = Some(timeouts.connect);
    p.options.read_timeout = Some(read);
    p.options.write_timeout = Some(read);
    p.options.idle_timeout = Some(Duration::from_secs(60));
    Arc::new(p)
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Instance {
    pub fn new(
        id: String,
        addr: SocketAddr,
        upstream_type: HeaderValue,
        origin_secret: Option<HeaderValue>,
        timeouts: Timeouts,
    ) -> Instance {
        Instance {
            peers: [
                build_peer(addr, &timeouts, timeouts.http),
                build_peer(addr, &timeouts, timeouts.sdk),
            ],
            timeouts,
            id_plain: crate::access_log::is_plain(id.as_bytes()),
            id,
            addr,
            upstream_type,
            origin_secret,
            series: Handles::default(),
        }
    }
}

/// `auth:` of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    #[default]
    Optional,
    Required,
}

/// Which domain a route belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DomainKey {
    /// `<env>.<default_domain_suffix>`
    Default,
    /// A custom domain, lower-case.
    Custom(String),
    /// `*`
    Any,
}

impl DomainKey {
    pub fn parse(s: &str) -> DomainKey {
        match s {
            "default" => DomainKey::Default,
            "*" => DomainKey::Any,
            other => DomainKey::Custom(other.to_ascii_lowercase()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            DomainKey::Default => "default",
            DomainKey::Custom(s) => s,
            DomainKey::Any => "*",
        }
    }
}

/// An HTTP access route.
#[derive(Debug)]
pub struct Route {
    /// `<domain><path>`, e.g. `default/api`: the route's name in metrics and logs.
    pub label: String,
    /// Whether `label` is written into a JSON string as is (the access log's check, made once).
    pub label_plain: bool,
    pub domain: DomainKey,
    /// The normalised trigger path: starts with `/`, no trailing `/` unless it is `/`.
    pub path: String,
    pub instance: Arc<Instance>,
    pub passthrough: bool,
    pub auth: Auth,
    /// This route's metric handles, resolved by the first request recorded against it.
    pub series: Handles<Series>,
}

/// What a config route says, before compiling.
pub struct RouteSpec {
    pub domain: DomainKey,
    pub path: String,
    pub instance: String,
    pub passthrough: bool,
    pub auth: Auth,
}

#[derive(Default)]
struct DomainRoutes {
    by_path: Map<Box<str>, Arc<Route>>,
    /// Length of the longest trigger path: longer candidates are never looked up.
    longest: usize,
}

/// Why a table could not be built (the config loader reports these with positions first).
#[derive(Debug, PartialEq, Eq)]
pub enum TableError {
    UnknownInstance(usize),
    DuplicateRoute(usize),
    BadPath(usize, String),
}

/// Instances and routes, ready for lookups.
pub struct RouteTable {
    instances: Map<String, Arc<Instance>>,
    custom: Map<String, DomainRoutes>,
    /// `*.example.com` domains, by `example.com`: one label under it.
    wildcard: Map<String, DomainRoutes>,
    default_host: String,
    /// Whether `custom` has an entry for `default_host` (it wins over `default`).
    default_shadowed: bool,
    default: Option<DomainRoutes>,
    any: Option<DomainRoutes>,
    routes: Vec<Arc<Route>>,
}

/// The result of routing an HTTP access request.
#[derive(Debug)]
pub enum HttpMatch<'a> {
    Found {
        route: Arc<Route>,
        /// The path (no query) to send upstream: the normalised path, stripped unless
        /// `passthrough`. Borrowed from the request's path when that needed no normalising.
        upstream_path: Cow<'a, str>,
    },
    InvalidHost,
    InvalidPath,
    /// The path is not valid percent-encoding.
    BadRequest,
}

impl RouteTable {
    /// `default_host` is `<env>.<default_domain_suffix>`.
    pub fn new(
        default_host: &str,
        instances: Vec<Arc<Instance>>,
        specs: Vec<RouteSpec>,
    ) -> Result<RouteTable, TableError> {
        let mut table = RouteTable {
            instances: instances.into_iter().map(|i| (i.id.clone(), i)).collect(),
            custom: Map::default(),
            wildcard: Map::default(),
            default_host: normalize_host(default_host).into_owned(),
            default_shadowed: false,
            default: None,
            any: None,
            routes: Vec::new(),
        };
        for (i, spec) in specs.into_iter().enumerate() {
            let path = normalize_trigger(&spec.path).map_err(|e| TableError::BadPath(i, e))?;
            let instance = table
                .instances
                .get(&spec.instance)
                .cloned()
                .ok_or(TableError::UnknownInstance(i))?;
            let label = format!("{}{}", spec.domain.as_str(), path);
            let route = Arc::new(Route {
                label_plain: crate::access_log::is_plain(label.as_bytes()),
                label,
                domain: spec.domain.clone(),
                path: path.clone(),
                instance,
                passthrough: spec.passthrough,
                auth: spec.auth,
                series: Handles::default(),
            });
            let slot = match &spec.domain {
                DomainKey::Default => table.default.get_or_insert_with(Default::default),
                DomainKey::Any => table.any.get_or_insert_with(Default::default),
                DomainKey::Custom(name) => match name.strip_prefix("*.") {
                    Some(parent) => table.wildcard.entry(parent.to_string()).or_default(),
                    None => table.custom.entry(name.clone()).or_default(),
                },
            };
            slot.longest = slot.longest.max(path.len());
            if slot.by_path.insert(path.into(), route.clone()).is_some() {
                return Err(TableError::DuplicateRoute(i));
            }
            table.routes.push(route);
        }
        table.default_shadowed = table.custom.contains_key(&table.default_host);
        Ok(table)
    }

    pub fn instance(&self, id: &str) -> Option<&Arc<Instance>> {
        self.instances.get(id)
    }

    pub fn instances(&self) -> impl Iterator<Item = &Arc<Instance>> {
        self.instances.values()
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub fn default_host(&self) -> &str {
        &self.default_host
    }

    /// Routes an HTTP access request by host (already without port, any case) and path
    /// (the raw path, without the query).
    pub fn match_http<'a>(&self, host: &str, raw_path: &'a [u8]) -> HttpMatch<'a> {
        let host = normalize_host(host);
        let default = self.default.as_ref().filter(|_| host == self.default_host);
        // The default host's own requests need no lookup unless a custom domain shadows it.
        let custom = match default {
            Some(_) if !self.default_shadowed => None,
            _ => self.custom.get(host.as_ref()),
        };
        let Some(domain) = custom
            .or(default)
            .or_else(|| {
                let (_, parent) = host.split_once('.')?;
                self.wildcard.get(parent)
            })
            .or(self.any.as_ref())
        else {
            return HttpMatch::InvalidHost;
        };
        let Some(path) = normalize_path(raw_path) else {
            return HttpMatch::BadRequest;
        };
        match longest_match(domain, &path) {
            Some(route) => {
                let upstream_path = if route.passthrough || route.path == "/" {
                    path
                } else {
                    let strip = route.path.len();
                    match path {
                        _ if path.len() == strip => Cow::Borrowed("/"),
                        Cow::Borrowed(p) => Cow::Borrowed(&p[strip..]),
                        Cow::Owned(p) => Cow::Owned(p[strip..].to_string()),
                    }
                };
                HttpMatch::Found {
                    route: route.clone(),
                    upstream_path,
                }
            }
            None => HttpMatch::InvalidPath,
        }
    }
}

fn longest_match<'a>(domain: &'a DomainRoutes, path: &str) -> Option<&'a Arc<Route>> {
    if !path.starts_with('/') {
        return None;
    }
    let bytes = path.as_bytes();
    // Candidates, longest first: the whole path, then every prefix ending before a `/`.
    if path.len() <= domain.longest {
        if let Some(r) = domain.by_path.get(path) {
            return Some(r);
        }
    }
    let mut end = bytes.len();
    while let Some(slash) = bytes[..end].iter().rposition(|&b| b == b'/') {
        if slash == 0 {
            break;
        }
        if slash <= domain.longest {
            if let Some(r) = domain.by_path.get(&path[..slash]) {
                return Some(r);
            }
        }
        end = slash;
    }
    domain.by_path.get("/")
}

/// Lower-case, no trailing dot. Ports are removed by the caller.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Removes the port from a `Host` value: `Example.com:8080` → `Example.com`,
/// `[::1]:80` → `[::1]`.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    // Digits (or none) after the last `:`, and no other `:` (an IPv6 address without brackets
    // keeps its last group). Read from the end: most hosts have neither a port nor a `:`.
    let b = host.as_bytes();
    let mut colon = b.len();
    while colon > 0 && b[colon - 1].is_ascii_digit() {
        colon -= 1;
    }
    match colon.checked_sub(1) {
        Some(at) if b[at] == b':' && !b[..at].contains(&b':') => &host[..at],
        _ => host,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises a request path the way RFC 3986 §6.2.2 allows without changing what it names:
/// percent-encoded unreserved characters are decoded, other escapes upper-cased, and `.`/`..`
/// segments removed. So `/%61pi/../admin` is matched, and forwarded, as `/admin`.
/// `None` for invalid percent-encoding or bytes that are not allowed in a path.
pub fn normalize_path(raw: &[u8]) -> Option<Cow<'_, str>> {
    let needs_work = raw.contains(&b'%') || has_dot_segment(raw);
    if !needs_work {
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex_val)?;
            let lo = raw.get(i + 2).copied().and_then(hex_val)?;
            let c = hi << 4 | lo;
            if is_unreserved(c) {
                decoded.push(c);
            } else {
                decoded.push(b'%');
                decoded.push(raw[i + 1].to_ascii_uppercase());
                decoded.push(raw[i + 2].to_ascii_uppercase());
            }
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    let s = String::from_utf8(decoded).ok()?;
    Some(Cow::Owned(remove_dot_segments(&s)))
}

fn has_dot_segment(raw: &[u8]) -> bool {
    raw.windows(2).any(|w| w == b"/.")
}

/// RFC 3986 §5.2.4, for absolute paths.
fn remove_dot_segments(path: &str) -> String {
    if !path.starts_with('/') {
        return path.to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    result
}

/// Checks and normalises a configured trigger path: `/api/` → `/api`.
pub fn normalize_trigger(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("trigger path `{path}` must start with `/`"));
    }
    if path.contains(['?', '#']) || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "trigger path `{path}` may not contain `?`, `#`, spaces or control characters"
        ));
    }
    if path.contains("//") {
        return Err(format!("trigger path `{path}` has an empty segment (`//`)"));
    }
    let normal = normalize_path(path.as_bytes())
        .ok_or_else(|| format!("trigger path `{path}` has invalid percent-encoding"))?;
    if normal != path.trim_end_matches('/') && normal != path {
        return Err(format!(
            "trigger path `{path}` has `.` or `..` segments or needless escapes; write `{normal}`"
        ));
    }
    let trimmed = normal.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str) -> Arc<Instance> {
        Arc::new(Instance::new(
            id.to_string(),
            "127.0.0.1:80".parse().unwrap(),
            HeaderValue::from_static("Lighthouse"),
            None,
            Timeouts::default(),
        ))
    }

    fn spec(domain: &str, path: &str, instance: &str, passthrough: bool) -> RouteSpec {
        RouteSpec {
            domain: DomainKey::parse(domain),
            path: path.to_string(),
            instance: instance.to_string(),
            passthrough,
            auth: Auth::Optional,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(
            "env-1.service.tcloudbase.com",
            vec![inst("a"), inst("b"), inst("c"), inst("d")],
            vec![
                spec("default", "/api", "a", false),
                spec("default", "/api/v2", "b", false),
                spec("default", "/", "c", false),
                spec("api.example.com", "/keep", "b", true),
                spec("*", "/", "d", false),
            ],
        )
        .unwrap()
    }

    fn found(t: &RouteTable, host: &str, path: &str) -> (String, String) {
        match t.match_http(host, path.as_bytes()) {
            HttpMatch::Found {
                route,
                upstream_path,
            } => (route.label.clone(), upstream_path.into_owned()),
            other => panic!("{host}{path}: {other:?}"),
        }
    }

    #[test]
    fn longest_trigger_path_on_a_segment_boundary() {
        let t = table();
        let h = "env-1.service.tcloudbase.com";
        assert_eq!(found(&t, h, "/api"), ("default/api".into(), "/".into()));
        assert_eq!(found(&t, h, "/api/"), ("default/api".into(), "/".into()));
        assert_eq!(
            found(&t, h, "/api/user"),
            ("default/api".into(), "/user".into())
        );
        assert_eq!(
            found(&t, h, "/api/v2/x"),
            ("default/api/v2".into(), "/x".into())
        );
        assert_eq!(
            found(&t, h, "/api/v23"),
            ("default/api".into(), "/v23".into())
        );
        assert_eq!(found(&t, h, "/apix"), ("default/".into(), "/apix".into()));
        assert_eq!(found(&t, h, "/"), ("default/".into(), "/".into()));
    }

    #[test]
    fn host_picks_exact_then_default_then_any() {
        let t = table();
        assert_eq!(
            found(&t, "API.Example.COM", "/keep/x").0,
            "api.example.com/keep"
        );
        assert_eq!(
            found(&t, "Env-1.Service.TCloudbase.com.", "/api").0,
            "default/api"
        );
        assert_eq!(found(&t, "other.example.org", "/anything").0, "*/");
        // the custom domain was picked: no falling back to `*` for its unmatched paths
        assert!(matches!(
            t.match_http("api.example.com", b"/other"),
            HttpMatch::InvalidPath
        ));
        let no_any = RouteTable::new(
            "e.s.com",
            vec![inst("a")],
            vec![spec("default", "/x", "a", false)],
        )
        .unwrap();
        assert!(matches!(
            no_any.match_http("nope.com", b"/x"),
            HttpMatch::InvalidHost
        ));
        assert!(matches!(
            no_any.match_http("e.s.com", b"/y"),
            HttpMatch::InvalidPath
        ));
    }

    /// The default host's requests skip the custom-domain lookup, unless a custom domain of
    /// the same name is configured: that one still wins.
    #[test]
    fn a_custom_domain_named_like_the_default_host_wins() {
        let routes = |custom: &str| {
            RouteTable::new(
                "env-1.example.com",
                vec![inst("a"), inst("b")],
                vec![
                    spec("default", "/", "a", false),
                    spec(custom, "/", "b", false),
                ],
            )
            .unwrap()
        };
        let t = routes("env-1.example.com");
        assert_eq!(found(&t, "ENV-1.example.com", "/x").0, "env-1.example.com/");
        let t = routes("other.example.com");
        assert_eq!(found(&t, "env-1.example.com.", "/x").0, "default/");
        assert_eq!(found(&t, "other.example.com", "/x").0, "other.example.com/");
    }

    #[test]
    fn wildcard_domain_covers_one_label_after_exact_and_default() {
        let t = RouteTable::new(
            "env-1.example.com",
            vec![inst("a"), inst("b"), inst("c")],
            vec![
                spec("*.example.com", "/", "a", false),
                spec("api.example.com", "/", "b", false),
                spec("default", "/", "c", false),
            ],
        )
        .unwrap();
        assert_eq!(found(&t, "Shop.Example.com", "/x").0, "*.example.com/");
        assert_eq!(found(&t, "api.example.com", "/x").0, "api.example.com/");
        assert_eq!(found(&t, "env-1.example.com", "/x").0, "default/");
        for host in ["example.com", "a.b.example.com", "xexample.com"] {
            assert!(
                matches!(t.match_http(host, b"/"), HttpMatch::InvalidHost),
                "{host}"
            );
        }
    }

    #[test]
    fn passthrough_keeps_the_prefix() {
        let t = table();
        assert_eq!(
            found(&t, "api.example.com", "/keep/a/b"),
            ("api.example.com/keep".into(), "/keep/a/b".into())
        );
    }

    #[test]
    fn normalisation_defeats_encoded_and_dotted_paths() {
        let t = table();
        let h = "env-1.service.tcloudbase.com";
        assert_eq!(
            found(&t, h, "/%61pi/user"),
            ("default/api".into(), "/user".into())
        );
        assert_eq!(
            found(&t, h, "/x/../api/v2/./y"),
            ("default/api/v2".into(), "/y".into())
        );
        assert_eq!(
            found(&t, h, "/api/../../etc"),
            ("default/".into(), "/etc".into())
        );
        assert_eq!(
            found(&t, h, "/api%2fv2"),
            ("default/".into(), "/api%2Fv2".into())
        );
        assert!(matches!(t.match_http(h, b"/api%zz"), HttpMatch::BadRequest));
        assert!(matches!(t.match_http(h, b"/api%4"), HttpMatch::BadRequest));
        assert!(matches!(t.match_http(h, b"*"), HttpMatch::InvalidPath));
    }

    #[test]
    fn remove_dot_segments_follows_rfc_3986() {
        for (input, want) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/.", "/"),
            ("/..", "/"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/./b", "/a/b"),
            ("/a//b", "/a//b"),
        ] {
            assert_eq!(remove_dot_segments(input), want, "{input}");
        }
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        // An empty port goes too; anything else after the last `:` is not a port.
        assert_eq!(host_without_port("example.com:"), "example.com");
        assert_eq!(host_without_port("example.com:8x0"), "example.com:8x0");
        assert_eq!(host_without_port("8080"), "8080");
        assert_eq!(host_without_port(":80"), "");
        assert_eq!(host_without_port(""), "");
        // Two colons: an IPv6 address without brackets, left whole.
        assert_eq!(host_without_port("2001:db8::1"), "2001:db8::1");
        assert_eq!(host_without_port("a:b:80"), "a:b:80");
    }

    #[test]
    fn trigger_paths_are_checked_and_normalised() {
        assert_eq!(normalize_trigger("/api/").unwrap(), "/api");
        assert_eq!(normalize_trigger("/").unwrap(), "/");
        for bad in ["api", "/a?b", "/a#b", "/a//b", "/a/../b", "/a b", "/%zz"] {
            assert!(normalize_trigger(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn table_errors_name_the_route() {
        let dup = RouteTable::new(
            "e.s",
            vec![inst("a")],
            vec![spec("*", "/x", "a", false), spec("*", "/x/", "a", false)],
        );
        assert_eq!(dup.err(), Some(TableError::DuplicateRoute(1)));
        let unknown = RouteTable::new("e.s", vec![inst("a")], vec![spec("*", "/x", "zz", false)]);
        assert_eq!(unknown.err(), Some(TableError::UnknownInstance(0)));
    }

    #[test]
    fn ten_thousand_routes_still_match_longest() {
        let instances = vec![inst("a")];
        let specs = (0..10_000)
            .map(|i| spec("*", &format!("/svc{i}/v1"), "a", false))
            .collect();
        let t = RouteTable::new("e.s", instances, specs).unwrap();
        assert_eq!(
            found(&t, "h", "/svc9999/v1/x"),
            ("*/svc9999/v1".into(), "/x".into())
        );
        assert!(matches!(
            t.match_http("h", b"/svc10000/v1"),
            HttpMatch::InvalidPath
        ));
    }
}
