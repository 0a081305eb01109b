//! The file format of SPEC §3, section by section. Every struct refuses unknown keys.

use super::units::{Dur, Size};
use anygate_plugins::routes::Auth;
use serde::Deserialize;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub http: Option<String>,
    pub https: Option<String>,
    pub admin: Option<String>,
}

/// Pingora tuning. Changes here need a restart (graceful upgrade).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Worker threads (default: one per CPU).
    pub threads: Option<usize>,
    /// Let idle threads take work from busy ones (Pingora `work_stealing`, default true).
    pub work_stealing: Option<bool>,
    /// Idle upstream connections kept per thread pool (default 1024).
    pub upstream_keepalive_pool_size: Option<usize>,
    /// How long a stopping process keeps serving in-flight requests (default 10s).
    pub grace_period: Option<Dur>,
    /// How long runtimes get to finish after the grace period (default 5s).
    pub graceful_shutdown_timeout: Option<Dur>,
    /// Unix socket used to hand listeners to a new process on upgrade.
    pub upgrade_sock: Option<String>,
    /// PID file (written in daemon mode).
    pub pid_file: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: String,
    pub key: String,
}

/// A domain's `tls`: certificate files, or `acme` (SPEC §11).
#[derive(Clone, Debug, PartialEq)]
pub enum DomainTls {
    Files(Tls),
    Acme,
}

impl<'de> Deserialize<'de> for DomainTls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = DomainTls;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`{ cert, key }` or `acme`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<DomainTls, E> {
                match s {
                    "acme" => Ok(DomainTls::Acme),
                    _ => Err(E::custom(format!(
                        "`tls` is `{{ cert, key }}` or `acme`, not `{s}`"
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<DomainTls, A::Error> {
                Tls::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(DomainTls::Files)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub name: String,
    pub tls: Option<DomainTls>,
    /// Plain-HTTP requests for this domain get a 308 to the HTTPS listener.
    #[serde(default)]
    pub force_https: bool,
}

/// What the HTTPS listener does with a client whose SNI names no domain with `tls`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSni {
    /// Answer with the default certificate.
    #[default]
    Default,
    /// Refuse the handshake.
    Refuse,
}

/// The top-level `tls:` section: settings of the HTTPS listener that belong to no domain.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    /// The certificate for clients whose SNI matches no domain (default: the first domain
    /// with `tls`).
    pub default: Option<Tls>,
    #[serde(default)]
    pub unknown_sni: UnknownSni,
    /// The port written in `force_https` redirects (default: the `listen.https` port).
    pub redirect_port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub id: String,
    pub address: String,
    pub upstream_type: Option<String>,
    pub origin_secret_env: Option<String>,
    /// Active health checks (SPEC §12); without them health is passive.
    pub health_check: Option<HealthCheck>,
}

/// `instances[].health_check`: an HTTP GET probe sent by a background task.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Default `/healthz`.
    pub path: Option<String>,
    /// Default 5s.
    pub interval: Option<Dur>,
    /// Default 1s.
    pub timeout: Option<Dur>,
    /// Consecutive failures that mark the instance down (default 3).
    pub unhealthy: Option<u32>,
    /// Consecutive successes that mark it up again (default 2).
    pub healthy: Option<u32>,
}

/// The top-level `admin:` section (SPEC §12): the admin API and console.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// The environment variable holding the bearer token of `/metrics` and `/api/*`.
    pub token_env: Option<String>,
    /// How many recent requests the lookup buffer keeps (default 10000, 0 = none).
    pub recent_requests: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub domain: String,
    pub path: String,
    pub instance: String,
    #[serde(default)]
    pub passthrough: bool,
    #[serde(default)]
    pub auth: Auth,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_sdk_body: Option<Size>,
    pub max_body: Option<Size>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub connect: Option<Dur>,
    pub sdk: Option<Dur>,
    pub http: Option<Dur>,
}

/// The ACME challenge the CA validates a domain with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Challenge {
    /// `http://<domain>/.well-known/acme-challenge/<token>` on the HTTP listener (port 80).
    #[default]
    Http01,
    /// A handshake with ALPN `acme-tls/1` on the HTTPS listener (port 443).
    TlsAlpn01,
}

/// The top-level `acme:` section (SPEC §11). Values are read as text and checked when the
/// config is compiled, so that every mistake in the section is reported at once.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    /// The CA's RFC 8555 directory URL (default: Let's Encrypt production).
    pub directory: Option<String>,
    /// Account contact, without `mailto:`.
    pub email: Option<String>,
    /// Extra PEM roots to trust the directory's HTTPS with.
    pub ca_roots: Option<String>,
    /// Account key, keys and certificates.
    pub storage: Option<String>,
    /// A duration (`30d`).
    pub renew_before: Option<String>,
    /// `http-01` or `tls-alpn-01`.
    pub challenge: Option<String>,
}
