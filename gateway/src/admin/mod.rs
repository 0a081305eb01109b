//! The admin listener (SPEC §10, §12), on its own address and never on the public one:
//! `/metrics`, `/healthz`, `/readyz`, the JSON admin API under `/api/v1/` and the console page
//! at `/`. It reads the shutdown signal itself so that `/readyz` turns 503 as soon as the
//! process starts draining.
//!
//! It is a Pingora [`HttpServerApp`] rather than a `ServeHttp`: `ServeHttp` must build the
//! whole response before returning, and the traffic stream is a response that lasts as long
//! as the client listens. Here the stream is a chunked body written once a second (Pingora
//! flushes every chunk), in the same task, until the client leaves or the process drains.

mod answer;
mod api;
mod auth;
mod domains;
mod metrics;
mod page;
mod requests;
pub mod settings;
mod traffic;

pub use answer::Answer;

use crate::reload::Reload;
use crate::snapshot::Store;
use anygate_plugins::telemetry::Telemetry;
use anygate_plugins::ErrorCode;
use async_trait::async_trait;
use http::{Method, StatusCode};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_http::RequestHeader;
use std::sync::{Arc, Once};

pub struct Admin {
    telemetry: Arc<Telemetry>,
    store: Arc<Store>,
    /// `None` when there is no config to reload (the demo's embedded config).
    reloader: Option<Arc<dyn Reload>>,
    process: Once,
}

/// What a request gets: a whole answer, or the traffic stream.
enum Reply {
    Full(Answer),
    Traffic(traffic::Start),
}

/// `/readyz`: ready once a config is loaded, and no longer once the process drains.
pub fn readiness(loaded: bool, draining: bool) -> Answer {
    match (loaded, draining) {
        (_, true) => Answer::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        ),
        (false, false) => Answer::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no config loaded\n",
        ),
        (true, false) => Answer::text(StatusCode::OK, "ready\n"),
    }
}

fn read_only(req: &RequestHeader) -> bool {
    req.method == Method::GET || req.method == Method::HEAD
}

impl Admin {
    /// The admin app; registers the config and health metrics of `store` in the telemetry
    /// registry.
    pub fn new(
        telemetry: Arc<Telemetry>,
        store: Arc<Store>,
        reloader: Option<Arc<dyn Reload>>,
    ) -> Result<Admin, prometheus::Error> {
        telemetry
            .registry
            .register(Box::new(metrics::ConfigMetrics::new(store.clone())?))?;
        telemetry
            .registry
            .register(Box::new(metrics::HealthMetrics::new(store.clone())?))?;
        Ok(Admin {
            telemetry,
            store,
            reloader,
            process: Once::new(),
        })
    }

    fn scrape(&self) -> String {
        // Registered on the first scrape: the collector keeps the pid it was made with, and
        // Pingora may have forked into a daemon since start-up.
        #[cfg(target_os = "linux")]
        self.process.call_once(|| {
            let c = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(e) = self.telemetry.registry.register(Box::new(c)) {
                log::warn!("admin: process metrics unavailable: {e}");
            }
        });
        self.telemetry.render()
    }

    async fn dispatch(&self, req: &RequestHeader, draining: bool) -> Reply {
        let path = req.uri.path();
        let open = matches!(path, "/healthz" | "/readyz") || page::is_page(path);
        if !open && (path == "/metrics" || path.starts_with("/api/")) {
            let snap = self.store.load();
            if let Err(refused) = auth::check(req, &snap.admin) {
                return Reply::Full(refused);
            }
        }
        if let Some(rest) = path.strip_prefix("/api/") {
            return self.api(req, rest).await;
        }
        if !read_only(req) {
            return Reply::Full(
                Answer::text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n")
                    .with_header("Allow", "GET, HEAD"),
            );
        }
        Reply::Full(match path {
            "/metrics" => Answer::metrics(self.scrape()),
            "/healthz" => Answer::text(StatusCode::OK, "ok\n"),
            "/readyz" => readiness(self.store.generation() > 0, draining),
            p => page::serve(p).unwrap_or_else(|| {
                Answer::text(
                    StatusCode::NOT_FOUND,
                    "not found: try /, /metrics, /healthz, /readyz or /api/v1/status\n",
                )
            }),
        })
    }

    async fn api(&self, req: &RequestHeader, rest: &str) -> Reply {
        let store = &self.store;
        let (endpoint, post) =
            match rest {
                "v1/reload" => ("reload", true),
                "v1/status" | "v1/routes" | "v1/instances" | "v1/domains" | "v1/requests"
                | "v1/traffic" => (rest.trim_start_matches("v1/"), false),
                r if r.starts_with("v1/requests/") => ("request", false),
                _ => return Reply::Full(Answer::error(
                    ErrorCode::NotFound,
                    "no such admin API endpoint (see /api/v1/status and the manual's console page)",
                )),
            };
        let method_ok = if post {
            req.method == Method::POST
        } else {
            read_only(req)
        };
        if !method_ok {
            let allow = if post { "POST" } else { "GET, HEAD" };
            return Reply::Full(
                Answer::error(
                    ErrorCode::InvalidRequest,
                    &format!("use {allow} for /api/{rest}"),
                )
                .with_header("Allow", allow),
            );
        }
        let query = req.uri.query().unwrap_or("");
        Reply::Full(match endpoint {
            "status" => api::status(store),
            "routes" => api::routes(&store.load()),
            "instances" => api::instances(store),
            "domains" => domains::domains(&store.load(), &store.acme.issued.load()),
            "requests" => requests::list(&store.monitor, query),
            "request" => requests::one(&store.monitor, &rest["v1/requests/".len()..]),
            "traffic" => match traffic::Start::new(&store.monitor, req, query) {
                Ok(start) => return Reply::Traffic(start),
                Err(a) => a,
            },
            _ => api::reload(self.reloader.clone()).await,
        })
    }
}

#[async_trait]
impl HttpServerApp for Admin {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(http.read_request().await, Ok(true)) {
            return None;
        }
        let draining = *shutdown.borrow();
        // Request bodies are not read: a connection that sent one is not reused.
        let keepalive = !draining && http.is_body_empty();
        http.set_keepalive(keepalive.then_some(60));
        let reply = self.dispatch(http.req_header(), draining).await;
        let answer = match reply {
            Reply::Full(a) => a,
            Reply::Traffic(start) => {
                start
                    .stream(&mut http, &self.store.monitor, shutdown.clone())
                    .await;
                return None;
            }
        };
        let head = http.req_header().method == Method::HEAD;
        let (header, body) = answer.into_parts()?;
        http.write_response_header(Box::new(header)).await.ok()?;
        if !head && !body.is_empty() {
            http.write_response_body(body, true).await.ok()?;
        }
        let settings = HttpPersistentSettings::for_session(&http);
        http.finish()
            .await
            .ok()
            .flatten()
            .map(|s| ReusedHttpStream::from_reusable_stream(s, settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_config_and_shutdown() {
        assert_eq!(
            readiness(false, false).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(readiness(true, false).status, StatusCode::OK);
        assert_eq!(
            readiness(true, true).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            readiness(false, false).body,
            "not ready: no config loaded\n"
        );
    }
}
