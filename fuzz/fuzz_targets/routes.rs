//! SPEC §4 routing: path normalisation and route lookup for any host and raw path a client
//! sends, and trigger paths as an operator writes them. Line 1: the host; the rest: the raw
//! request path (bytes, the query already cut off by the caller).
#![no_main]

use anygate_plugins::routes::{
    host_without_port, normalize_path, normalize_trigger, Auth, DomainKey, HttpMatch, Instance,
    RouteSpec, RouteTable, Timeouts,
};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

const DEFAULT_HOST: &str = "env-1.service.tcloudbase.com";

fn table() -> &'static RouteTable {
    static T: OnceLock<RouteTable> = OnceLock::new();
    T.get_or_init(|| {
        let instance = |id: &str| {
            Arc::new(Instance::new(
                id.into(),
                "127.0.0.1:9".parse().expect("addr"),
                http::HeaderValue::from_static("Lighthouse"),
                None,
                Timeouts::default(),
            ))
        };
        let route = |domain: &str, path: &str, passthrough: bool| RouteSpec {
            domain: DomainKey::parse(domain),
            path: path.into(),
            instance: "a".into(),
            passthrough,
            auth: Auth::Optional,
        };
        RouteTable::new(
            DEFAULT_HOST,
            vec![instance("a")],
            vec![
                route("default", "/api", false),
                route("default", "/api/v2", false),
                route("default", "/keep", true),
                route("default", "/%E4%B8%AD", false),
                route("api.example.com", "/", false),
                route("*.example.org", "/x", false),
                route("*", "/any", false),
            ],
        )
        .expect("table")
    })
}

fuzz_target!(|data: &[u8]| {
    let (host, path) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let host = String::from_utf8_lossy(host);
    let bare = host_without_port(&host);
    assert!(host.starts_with(bare));

    if let Some(p) = normalize_path(path) {
        // Normalising is idempotent: what is routed is what the instance would route.
        let again = normalize_path(p.as_bytes()).expect("a normalised path normalises");
        assert_eq!(again, p, "{:?}", String::from_utf8_lossy(path));
    }
    match table().match_http(bare, path) {
        HttpMatch::Found {
            route,
            upstream_path,
        } => {
            assert!(upstream_path.starts_with('/'), "{upstream_path:?}");
            let normal = normalize_path(path).expect("matched paths normalise");
            assert!(normal.starts_with(route.path.as_str()));
            let rest = &normal[route.path.len()..];
            // A segment boundary: `/api` never matches `/apix`.
            assert!(route.path == "/" || rest.is_empty() || rest.starts_with('/'));
            if !route.passthrough && route.path != "/" {
                assert_eq!(upstream_path, if rest.is_empty() { "/" } else { rest });
            }
        }
        HttpMatch::InvalidHost | HttpMatch::InvalidPath | HttpMatch::BadRequest => {}
    }

    // The same bytes as a trigger path in the config.
    if let Ok(t) = std::str::from_utf8(path) {
        if let Ok(n) = normalize_trigger(t) {
            assert_eq!(normalize_trigger(&n).as_deref(), Ok(n.as_str()), "{t:?}");
        }
    }
});
