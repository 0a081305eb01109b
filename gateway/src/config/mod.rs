//! The config file: YAML with positions, read section by section so that `anygate check`
//! reports every error at once as `FILE:LINE:COL: message`.

mod load;
pub mod model;
pub mod units;
pub mod yaml;

pub use load::{load_file, load_named, load_str};
pub use yaml::Mark;

use anygate_plugins::PluginConfig;
use std::fmt;
use std::path::PathBuf;

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub mark: Mark,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.mark.line, self.mark.col, self.message
        )
    }
}

/// All the errors of one load, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A value read from the file, with where it was and where each of its keys' values were.
#[derive(Clone, Debug, PartialEq)]
pub struct Item<T> {
    pub value: T,
    pub at: Mark,
    pub keys: Vec<(String, Mark)>,
}

impl<T> Item<T> {
    /// Where `key`'s value is written, or the item itself when the key is absent. A dotted
    /// path (`session.apps.1.secret_env`, for items read with nested keys) falls back to its
    /// closest written parent.
    pub fn mark_of(&self, key: &str) -> Mark {
        let mut key = key;
        loop {
            if let Some((_, m)) = self.keys.iter().find(|(k, _)| k == key) {
                return *m;
            }
            match key.rsplit_once('.') {
                Some((parent, _)) => key = parent,
                None => return self.at,
            }
        }
    }
}

/// The file, parsed and typed but not yet cross-checked.
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// The path as given: relative paths in the config resolve against its directory.
    pub path: PathBuf,
    /// What errors name: the path, or `etcd:KEY@REV` for the config document in etcd.
    pub name: String,
    pub env: Option<Item<String>>,
    pub listen: Item<model::Listen>,
    pub server: Item<model::Server>,
    pub default_domain_suffix: Option<Item<String>>,
    pub domains: Vec<Item<model::Domain>>,
    pub instances: Vec<Item<model::Instance>>,
    pub routes: Vec<Item<model::Route>>,
    pub limits: Item<model::Limits>,
    pub timeouts: Item<model::Timeouts>,
    /// `None` when the file has no `plugins:` (the edge chain).
    pub plugins: Option<Vec<Item<PluginConfig>>>,
    /// HTTPS listener settings (default certificate, unknown SNI).
    pub tls: Item<model::TlsListener>,
    /// Automatic HTTPS (SPEC §11); `None` when the file has no `acme:`.
    pub acme: Option<Item<model::Acme>>,
    /// The admin API and console settings.
    pub admin: Item<model::Admin>,
    /// TCP passthrough listeners (SPEC §14).
    pub streams: Vec<Item<crate::streams::StreamConfig>>,
    /// Where the config lives when it is not this file (SPEC §13): this file is then the
    /// bootstrap (`listen`, `server`, `config_source`).
    pub config_source: Option<Item<crate::source::SourceConfig>>,
    /// The top-level keys as written, with where (a bootstrap and the etcd document each
    /// accept only their own).
    pub top_keys: Vec<(String, Mark)>,
    /// Whether a section had items that failed to parse (cross-references to it are then
    /// not checked, to avoid reporting the same mistake twice).
    pub incomplete: Incomplete,
    /// Schema errors found while reading (unknown keys, wrong types, bad values).
    pub parse_errors: Vec<ConfigError>,
    /// Every `*_env` setting in the file: the variable it names and where (so `check` can
    /// point at each unset one).
    pub env_vars: Vec<(String, Mark)>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Incomplete {
    pub domains: bool,
    pub instances: bool,
    pub plugins: bool,
    /// `acme:` is written but could not be read.
    pub acme: bool,
}

impl FileConfig {
    pub fn error(&self, mark: Mark, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.name.clone(),
            mark,
            message: message.into(),
        }
    }
}
