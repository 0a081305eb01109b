//! The bootstrap file of cluster mode (SPEC §13): `listen`, `server` and `config_source`;
//! everything else is the config document in etcd, compiled with the bootstrap's fixed
//! settings exactly as a file would be.

use crate::config::{self, model, ConfigError, ConfigErrors, FileConfig, Item, Mark};
use crate::snapshot::{self, Compiled, EnvLookup, Purpose, Snapshot};
use anygate_plugins::telemetry::Telemetry;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The keys a bootstrap file holds; the document in etcd holds every other one.
pub const BOOTSTRAP_KEYS: &[&str] = &["listen", "server", "admin", "config_source"];

/// `config_source:` as written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub etcd: EtcdConfig,
}

/// `config_source.etcd:` as written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members, `http://host:port`.
    pub endpoints: Vec<String>,
    /// The key holding the whole config document.
    pub key: String,
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    /// The last document served, to start while etcd is down.
    pub cache: Option<String>,
}

/// A checked bootstrap file.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    pub path: PathBuf,
    /// `listen`, `server` and `admin`, handed to every document.
    pub listen: model::Listen,
    pub server: model::Server,
    pub admin: model::Admin,
    pub endpoints: Vec<String>,
    pub key: String,
    /// User name and password, read from the environment.
    pub user: Option<(String, String)>,
    pub cache: Option<PathBuf>,
}

impl Bootstrap {
    /// What errors in the document at `revision` are reported against.
    pub fn document_name(&self, revision: i64) -> String {
        format!("etcd:{}@{revision}", self.key)
    }

    /// Where `config push` records who pushed each revision, and when.
    pub fn history_prefix(&self) -> String {
        format!("{}/history/", self.key)
    }
}

/// What a bootstrap file's `config_source` says, checked; warnings only with `Check`.
pub struct Checked {
    pub bootstrap: Result<Bootstrap, ConfigErrors>,
    pub warnings: Vec<ConfigError>,
}

/// Reads `path`: `None` when it has no `config_source` (a plain config file).
pub fn read(path: &Path, env: EnvLookup, purpose: Purpose) -> Option<Checked> {
    let file = match config::load_file(path) {
        Ok(f) => f,
        // A file that does not even parse is reported by the plain loader.
        Err(_) => return None,
    };
    let source = file.config_source.clone()?;
    Some(check(&file, &source, env, purpose))
}

fn check(
    file: &FileConfig,
    source: &Item<SourceConfig>,
    env: EnvLookup,
    purpose: Purpose,
) -> Checked {
    let mut errors = file.parse_errors.clone();
    let mut warnings = Vec::new();
    for (key, mark) in &file.top_keys {
        if !BOOTSTRAP_KEYS.contains(&key.as_str()) {
            errors.push(file.error(
                *mark,
                format!(
                    "`{key}` belongs in the config document in etcd: with `config_source` this file holds only {}",
                    BOOTSTRAP_KEYS.join(", ")
                ),
            ));
        }
    }
    if let Err(e) = snapshot::check_fixed(file) {
        errors.extend(e);
    }
    let etcd = &source.value.etcd;
    let at = |key: &str| source.mark_of(&format!("etcd.{key}"));
    if etcd.endpoints.is_empty() {
        errors.push(file.error(
            at("endpoints"),
            "`endpoints` needs at least one etcd member (e.g. http://10.0.0.2:2379)",
        ));
    }
    for (i, url) in etcd.endpoints.iter().enumerate() {
        if let Err(msg) = check_endpoint(url) {
            let mark = source.mark_of(&format!("etcd.endpoints.{i}"));
            errors.push(file.error(mark, msg));
        }
    }
    let key = etcd.key.trim();
    if key.is_empty() || key.ends_with('/') || key != etcd.key {
        errors.push(file.error(
            at("key"),
            format!("`key` `{}` must be a non-empty etcd key without surrounding spaces or a trailing `/` (e.g. /anygate/config)", etcd.key),
        ));
    }
    let mut secret = |var: &Option<String>, name: &str| -> Option<String> {
        let var = var.as_ref()?;
        match env(var) {
            Some(v) if !v.is_empty() => Some(v),
            _ => {
                let msg = format!("environment variable `{var}` is not set");
                match purpose {
                    Purpose::Serve => errors.push(file.error(at(name), msg)),
                    Purpose::Check => warnings.push(file.error(
                        at(name),
                        format!("{msg} (`run` refuses to start without it)"),
                    )),
                }
                Some(String::new())
            }
        }
    };
    let user = secret(&etcd.username_env, "username_env");
    let password = secret(&etcd.password_env, "password_env");
    let user = match (user, password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        _ => {
            errors.push(file.error(at("etcd"), "`username_env` and `password_env` go together"));
            None
        }
    };
    errors.sort_by_key(|e| (e.mark.line, e.mark.col));
    errors.dedup();
    let bootstrap = match errors.is_empty() {
        true => Ok(Bootstrap {
            path: file.path.clone(),
            listen: file.listen.value.clone(),
            server: file.server.value.clone(),
            admin: file.admin.value.clone(),
            endpoints: etcd.endpoints.clone(),
            key: etcd.key.clone(),
            user,
            cache: etcd
                .cache
                .as_deref()
                .map(|c| snapshot::relative_to(&file.path, c)),
        }),
        false => Err(ConfigErrors(errors)),
    };
    Checked {
        bootstrap,
        warnings,
    }
}

/// `http://host:port` (or `host:port`): etcd's client URL.
fn check_endpoint(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Err(format!("`{url}`: TLS to etcd is not supported yet; use an http:// endpoint on a private network (or a local TLS-terminating proxy)"));
    }
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let bad = || format!("`{url}` is not an etcd client URL (write e.g. http://10.0.0.2:2379)");
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains('/') || authority.contains("://") {
        return Err(bad());
    }
    match authority.parse::<http::uri::Authority>() {
        Ok(a) if a.port_u16().is_some() => Ok(()),
        Ok(_) => Err(format!(
            "`{url}` needs a port (etcd's client port is usually 2379)"
        )),
        Err(_) => Err(bad()),
    }
}

/// Compiles the config document `text` (named `name` in errors) with the bootstrap's fixed
/// settings, exactly as a file: same checks, same errors, positions in the document.
#[allow(clippy::too_many_arguments)]
pub fn compile_document(
    boot: &Bootstrap,
    name: &str,
    text: &str,
    generation: u64,
    env: EnvLookup,
    telemetry: &Arc<Telemetry>,
    previous: Option<&Snapshot>,
    purpose: Purpose,
) -> Compiled {
    let mut doc = match config::load_named(&boot.path, name, text) {
        Ok(d) => d,
        Err(errors) => {
            return Compiled {
                snapshot: Err(errors),
                warnings: Vec::new(),
            }
        }
    };
    for (key, mark) in doc.top_keys.clone() {
        if BOOTSTRAP_KEYS.contains(&key.as_str()) {
            let msg = format!(
                "`{key}` belongs in the bootstrap file ({}), not in the config document",
                boot.path.display()
            );
            doc.parse_errors.push(doc.error(mark, msg));
        }
    }
    // The fixed settings come from the bootstrap (checked there); what the document must
    // give for them (a certificate for `listen.https`) is reported at its top.
    let top = Mark { line: 1, col: 1 };
    doc.listen = Item {
        value: boot.listen.clone(),
        at: top,
        keys: Vec::new(),
    };
    doc.server = Item {
        value: boot.server.clone(),
        at: top,
        keys: Vec::new(),
    };
    doc.admin = Item {
        value: boot.admin.clone(),
        at: top,
        keys: Vec::new(),
    };
    doc.config_source = None;
    let mut compiled = snapshot::compile_with(&doc, generation, env, telemetry, previous, purpose);
    // What the status API and the logs show as the config's source.
    if let Ok(s) = compiled.snapshot.as_mut() {
        s.source = PathBuf::from(name);
    }
    compiled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> Bootstrap {
        Bootstrap {
            path: PathBuf::from("/etc/anygate/boot.yaml"),
            listen: model::Listen {
                http: Some("127.0.0.1:8080".into()),
                https: None,
                admin: Some("127.0.0.1:9091".into()),
            },
            server: model::Server {
                threads: Some(3),
                ..Default::default()
            },
            admin: model::Admin::default(),
            endpoints: vec!["http://127.0.0.1:2379".into()],
            key: "/anygate/config".into(),
            user: None,
            cache: None,
        }
    }

    fn compile(text: &str) -> Compiled {
        let telemetry = Arc::new(Telemetry::new().unwrap());
        let none = |_: &str| None;
        compile_document(
            &boot(),
            "etcd:/anygate/config@7",
            text,
            7,
            &none,
            &telemetry,
            None,
            Purpose::Serve,
        )
    }

    #[test]
    fn a_document_gets_the_bootstrap_settings() {
        let doc = "env: e1\ninstances: [{ id: a, address: \"127.0.0.1:9\" }]\nroutes: [{ domain: \"*\", path: /, instance: a }]\n";
        let snap = compile(doc).snapshot.unwrap();
        assert_eq!(snap.generation, 7);
        assert_eq!(snap.listeners.http, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(
            snap.listeners.admin,
            Some("127.0.0.1:9091".parse().unwrap())
        );
        assert_eq!(snap.server.threads, 3);
    }

    #[test]
    fn a_document_is_checked_like_a_file_with_its_own_name() {
        let doc = "env: e1\nlisten: { http: 127.0.0.1:1 }\nconfig_source: {}\nroutes: [{ domain: \"*\", path: /, instance: nope }]\n";
        let errors = compile(doc).snapshot.err().unwrap().to_string();
        assert!(errors.contains("etcd:/anygate/config@7:2:1: `listen` belongs in the bootstrap file (/etc/anygate/boot.yaml), not in the config document"), "{errors}");
        assert!(
            errors.contains(
                "etcd:/anygate/config@7:3:1: `config_source` belongs in the bootstrap file"
            ),
            "{errors}"
        );
        assert!(errors.contains("etcd:/anygate/config@7:4:"), "{errors}");
        assert!(errors.contains("route names instance `nope`"), "{errors}");
        // YAML syntax errors too.
        let errors = compile("env: [\n").snapshot.err().unwrap().to_string();
        assert!(errors.starts_with("etcd:/anygate/config@7:"), "{errors}");
    }

    #[test]
    fn endpoints() {
        assert!(check_endpoint("http://127.0.0.1:2379").is_ok());
        assert!(check_endpoint("http://etcd-0.etcd:2379/").is_ok());
        assert!(check_endpoint("10.0.0.2:2379").is_ok());
        assert!(check_endpoint("http://[::1]:2379").is_ok());
        assert!(check_endpoint("http://127.0.0.1")
            .unwrap_err()
            .contains("needs a port"));
        assert!(check_endpoint("https://127.0.0.1:2379")
            .unwrap_err()
            .contains("TLS"));
        assert!(check_endpoint("http://a:1/x").is_err());
        assert!(check_endpoint("").is_err());
        assert!(check_endpoint("unix:///x").is_err());
    }
}
