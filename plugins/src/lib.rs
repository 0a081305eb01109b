//! anygate's plugins: the [`Plugin`] trait, the per-request [`Ctx`], and one module per plugin.
//!
//! Adding a plugin = one file with a `Config` (serde, `deny_unknown_fields`) whose `build()`
//! returns the runtime plugin, plus one line in the `plugins!` list below.

pub mod ctx;
pub mod error;
pub mod handles;
pub mod headers;
pub mod net;
pub mod plugin;
pub mod routes;
pub mod telemetry;

pub mod log_limit;
mod log_writer;
pub mod units;

pub mod cors;
pub mod firewall;
pub mod forwarded_for;
pub mod identity;
pub mod rate_limit;
pub mod request_id;
pub mod routing;
pub mod upstream_info;

pub mod access_log;
pub mod metrics;

pub use ctx::{Ctx, Entry, Identity};
pub use error::ErrorCode;
pub use plugin::{Chain, Flow, Phases, Plugin, Reply, Served, Step};

use routes::RouteTable;
use std::path::Path;
use std::sync::Arc;
use telemetry::Telemetry;

/// What `anygate check` hands a plugin for an environment variable that is not set on the
/// checking machine (it is reported as a warning there): a plugin that parses a variable's
/// value (a URL) skips that check for this one.
pub const STAND_IN_SECRET: &str = "anygate-check-stand-in-for-an-unset-variable";

/// Body limits (SPEC §3 `limits`), in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_sdk_body: u64,
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sdk_body: 100 * 1024,
            max_body: 10 * 1024 * 1024,
        }
    }
}

/// What plugins may use when they are built: the rest of the config, compiled.
///
/// A plugin whose settings and `env` are unchanged is reused across reloads (keeping its
/// state, e.g. rate-limit counters), so a plugin must not keep anything it reads from `routes`
/// or `limits`: per request they are in `Ctx::routes` / `Ctx::limits`.
pub struct BuildCtx<'a> {
    /// `env`, the CloudBase environment id.
    pub env: &'a str,
    pub routes: &'a Arc<RouteTable>,
    pub limits: Limits,
    /// Reads an environment variable (secrets are named in the file, never written in it).
    pub env_var: &'a dyn Fn(&str) -> Option<String>,
    /// The process's metric handles (created once, shared by every config generation).
    pub telemetry: &'a Arc<Telemetry>,
    /// The config file's directory: relative file paths are relative to it.
    pub config_dir: &'a Path,
    /// The names of the whole chain, in order, and where the plugin being built stands in it
    /// (for plugins that need another one before or after them).
    pub chain: &'a [&'static str],
    pub position: usize,
}

impl BuildCtx<'_> {
    /// Whether a plugin called `name` runs before this one.
    pub fn comes_after(&self, name: &str) -> bool {
        self.chain.iter().take(self.position).any(|n| *n == name)
    }

    /// Whether a plugin called `name` runs after this one.
    pub fn comes_before(&self, name: &str) -> bool {
        self.chain
            .iter()
            .skip(self.position + 1)
            .any(|n| *n == name)
    }
}

/// A plugin that cannot be built from its config. `field` names the offending key so the
/// loader can point at its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub field: Option<&'static str>,
    pub message: String,
    /// A dotted path to a nested key (`session.apps.1.secret_env`); wins over `field`.
    pub path: Option<String>,
}

impl PluginError {
    pub fn new(field: &'static str, message: impl Into<String>) -> PluginError {
        PluginError {
            field: Some(field),
            message: message.into(),
            path: None,
        }
    }

    /// An error about the plugin as a whole (reported at its `name`).
    pub fn general(message: impl Into<String>) -> PluginError {
        PluginError {
            field: None,
            message: message.into(),
            path: None,
        }
    }

    /// An error at a nested key, e.g. `session.apps.1.secret_env` (list items by index).
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> PluginError {
        PluginError {
            field: None,
            message: message.into(),
            path: Some(path.into()),
        }
    }

    /// The key the error points at, if any.
    pub fn key(&self) -> Option<&str> {
        self.path.as_deref().or(self.field)
    }
}

macro_rules! plugins {
    ($($name:literal => $variant:ident($module:ident)),* $(,)?) => {
        /// A plugin's config, tagged by its `name:` in the file.
        #[derive(Clone, Debug, PartialEq)]
        pub enum PluginConfig {
            $($variant($module::Config),)*
        }

        impl PluginConfig {
            /// Every plugin name, in the order of this list.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            pub fn name(&self) -> &'static str {
                match self {
                    $(PluginConfig::$variant(_) => $name,)*
                }
            }

            /// Reads the settings of the plugin called `name` (`None` if there is no such plugin).
            pub fn deserialize_named<'de, D: serde::Deserializer<'de>>(
                name: &str,
                settings: D,
            ) -> Option<Result<PluginConfig, D::Error>> {
                use serde::Deserialize;
                match name {
                    $($name => Some($module::Config::deserialize(settings).map(PluginConfig::$variant)),)*
                    _ => None,
                }
            }

            pub fn build(&self, cx: &BuildCtx) -> Result<Arc<dyn Plugin>, PluginError> {
                match self {
                    $(PluginConfig::$variant(c) => Ok(Arc::new(c.build(cx)?)),)*
                }
            }
        }
    };
}

plugins! {
    "request_id" => RequestId(request_id),
    "routing" => Routing(routing),
    "forwarded_for" => ForwardedFor(forwarded_for),
    "upstream_info" => UpstreamInfo(upstream_info),
    "access_log" => AccessLog(access_log),
    "metrics" => Metrics(metrics),
    "identity" => Identity(identity),
    "firewall" => Firewall(firewall),
    "rate_limit" => RateLimit(rate_limit),
    "cors" => Cors(cors),
}

/// The chain used when the file has no `plugins:` list (SPEC §1 edge deployment).
pub fn edge_chain() -> Vec<PluginConfig> {
    vec![
        PluginConfig::RequestId(Default::default()),
        // `none` mode: owned headers stripped, `X-WX-ENV` set.
        PluginConfig::Identity(Default::default()),
        PluginConfig::Routing(Default::default()),
        PluginConfig::ForwardedFor(Default::default()),
        PluginConfig::UpstreamInfo(Default::default()),
        PluginConfig::Metrics(Default::default()),
        PluginConfig::AccessLog(Default::default()),
    ]
}
