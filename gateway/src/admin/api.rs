//! The JSON endpoints about the running config: status (with the reload history), routes,
//! instances (with health), and reload on demand. Nothing secret is ever written: not the
//! admin token, not an origin secret (only whether there is one).

use super::Answer;
use crate::health::probe::human;
use crate::health::{CheckSettings, HealthView};
use crate::reload::{Outcome, Reload};
use crate::snapshot::{Snapshot, Store};
use crate::store::{ReloadRecord, Trigger};
use anygate_plugins::access_log::rfc3339_millis;
use anygate_plugins::routes::{Auth, DomainKey};
use anygate_plugins::ErrorCode;
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listeners {
    http: Option<String>,
    https: Option<String>,
    admin: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecentInfo {
    capacity: usize,
    recorded: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    version: &'static str,
    env: String,
    generation: u64,
    /// Where the config comes from: the file's path.
    source: String,
    loaded_at: String,
    started_at: String,
    uptime_seconds: u64,
    /// Whether `/metrics` and `/api/*` need the admin token.
    token_required: bool,
    listeners: Listeners,
    chain: Vec<&'static str>,
    recent_requests: RecentInfo,
    /// The last 50 loads, newest first.
    reloads: Vec<ReloadRecord>,
}

pub fn status(store: &Store) -> Answer {
    let snap = store.load();
    let m = &store.monitor;
    let l = &snap.listeners;
    let addr = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string());
    Answer::json(&Status {
        version: env!("CARGO_PKG_VERSION"),
        env: snap.env.clone(),
        generation: snap.generation,
        source: snap.source.display().to_string(),
        loaded_at: rfc3339_millis(store.loaded_at()),
        started_at: rfc3339_millis(m.started),
        uptime_seconds: SystemTime::now()
            .duration_since(m.started)
            .map_or(0, |d| d.as_secs()),
        token_required: snap.admin.token.is_some(),
        listeners: Listeners {
            http: addr(l.http),
            https: addr(l.https),
            admin: addr(l.admin),
        },
        chain: snap.chain.names(),
        recent_requests: RecentInfo {
            capacity: m.recent.capacity(),
            recorded: m.recent.recorded(),
        },
        reloads: store.history(),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RouteView<'a> {
    /// `<domain><path>`, the route's name in metrics, logs and filters.
    name: &'a str,
    domain: &'a str,
    /// The host the domain stands for (`default` is `<env>.<suffix>`; `*` is any host).
    host: &'a str,
    path: &'a str,
    instance: &'a str,
    passthrough: bool,
    auth: &'static str,
}

pub fn routes(snap: &Snapshot) -> Answer {
    let t = &snap.routes;
    let routes: Vec<RouteView> = t
        .routes()
        .iter()
        .map(|r| RouteView {
            name: &r.label,
            domain: r.domain.as_str(),
            host: match &r.domain {
                DomainKey::Default => t.default_host(),
                DomainKey::Custom(name) => name,
                DomainKey::Any => "*",
            },
            path: &r.path,
            instance: &r.instance.id,
            passthrough: r.passthrough,
            auth: match r.auth {
                Auth::Optional => "optional",
                Auth::Required => "required",
            },
        })
        .collect();
    #[derive(Serialize)]
    struct Routes<'a> {
        routes: Vec<RouteView<'a>>,
    }
    Answer::json(&Routes { routes })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckView {
    path: String,
    interval: String,
    timeout: String,
    unhealthy: u32,
    healthy: u32,
}

impl From<&CheckSettings> for CheckView {
    fn from(c: &CheckSettings) -> Self {
        CheckView {
            path: c.path.clone(),
            interval: human(c.interval),
            timeout: human(c.timeout),
            unhealthy: c.unhealthy,
            healthy: c.healthy,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InstanceView {
    id: String,
    address: String,
    upstream_type: String,
    /// Whether requests carry `X-AnyService-Authorization` (never the secret itself).
    origin_secret: bool,
    routes: Vec<String>,
    health_check: Option<CheckView>,
    health: Option<HealthView>,
}

pub fn instances(store: &Store) -> Answer {
    let snap = store.load();
    let mut list: Vec<InstanceView> = snap
        .routes
        .instances()
        .map(|i| InstanceView {
            id: i.id.clone(),
            address: i.addr.to_string(),
            upstream_type: String::from_utf8_lossy(i.upstream_type.as_bytes()).into_owned(),
            origin_secret: i.origin_secret.is_some(),
            routes: snap
                .routes
                .routes()
                .iter()
                .filter(|r| r.instance.id == i.id)
                .map(|r| r.label.clone())
                .collect(),
            health_check: snap.health_checks.get(&i.id).map(CheckView::from),
            health: store.monitor.health.view(&i.id),
        })
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    #[derive(Serialize)]
    struct Instances {
        instances: Vec<InstanceView>,
    }
    Answer::json(&Instances { instances: list })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Reloaded {
    result: &'static str,
    generation: u64,
    duration_ms: Option<f64>,
}

/// `POST /api/v1/reload`: reads the file (cluster mode: the etcd key) now, whatever its content. `200` with the new
/// generation, or `400` (`INVALID_REQUEST`) with every error and the generation that keeps
/// serving.
pub async fn reload(reloader: Option<Arc<dyn Reload>>) -> Answer {
    let Some(r) = reloader else {
        return Answer::error(
            ErrorCode::NotFound,
            "this gateway runs an embedded config (anygate demo): there is no file to reload",
        );
    };
    match r.reload(Trigger::Api).await {
        (Outcome::Applied { generation, took }, _) => Answer::json(&Reloaded {
            result: "success",
            generation,
            duration_ms: Some(took.as_micros() as f64 / 1000.0),
        }),
        (Outcome::Failed(errors), serving) => {
            let list: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
            let mut extra = serde_json::Map::new();
            extra.insert("result".into(), "failure".into());
            extra.insert("generation".into(), serving.into());
            extra.insert("errors".into(), list.clone().into());
            Answer::error_with(
                ErrorCode::InvalidRequest,
                &format!(
                    "the config was not reloaded ({} error{}); generation {serving} keeps serving",
                    list.len(),
                    if list.len() == 1 { "" } else { "s" }
                ),
                extra,
            )
        }
        // A forced check never answers `Unchanged`.
        (Outcome::Unchanged, serving) => Answer::json(&Reloaded {
            result: "unchanged",
            generation: serving,
            duration_ms: None,
        }),
    }
}
