//! Reading the file into a [`FileConfig`], collecting every error on the way.

use super::yaml::{self, DeError, Mark};
use super::{model, ConfigError, ConfigErrors, FileConfig, Incomplete, Item};
use anygate_plugins::PluginConfig;
use marked_yaml::Node;
use serde::de::DeserializeOwned;
use std::path::Path;

const TOP_KEYS: &[&str] = &[
    "env",
    "listen",
    "server",
    "default_domain_suffix",
    "domains",
    "instances",
    "routes",
    "limits",
    "timeouts",
    "plugins",
    "tls",
    "acme",
    "admin",
    "streams",
    "config_source",
];

/// Reads and parses a config file.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: name.clone(),
            mark: Mark { line: 1, col: 1 },
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    load_str(path, &text)
}

struct Loader {
    name: String,
    errors: Vec<ConfigError>,
}

impl Loader {
    fn err(&mut self, mark: Mark, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.name.clone(),
            mark,
            message: message.into(),
        });
    }

    fn de_err(&mut self, e: DeError, fallback: Mark) {
        let mark = e.mark.unwrap_or(fallback);
        self.err(mark, e.message);
    }

    /// Deserializes one value; on failure records the error and returns `None`.
    fn item<T: DeserializeOwned>(&mut self, node: &Node) -> Option<Item<T>> {
        let at = Mark::of(node);
        match yaml::from_node::<T>(node) {
            Ok(value) => Some(Item {
                value,
                at,
                keys: key_marks(node),
            }),
            Err(e) => {
                self.de_err(e, at);
                None
            }
        }
    }

    /// A list section: each element on its own, so one bad element does not hide the next.
    fn list<T: DeserializeOwned>(&mut self, node: &Node, section: &str) -> (Vec<Item<T>>, bool) {
        if is_null(node) {
            return (Vec::new(), false);
        }
        let Some(elements) = yaml::items(node) else {
            self.err(Mark::of(node), format!("`{section}` must be a list"));
            return (Vec::new(), true);
        };
        let mut out = Vec::with_capacity(elements.len());
        let mut failed = false;
        for el in elements {
            match self.item(el) {
                Some(v) => out.push(v),
                None => failed = true,
            }
        }
        (out, failed)
    }

    fn plugins(&mut self, node: &Node) -> Option<Vec<Item<PluginConfig>>> {
        if is_null(node) {
            return Some(Vec::new());
        }
        let Some(elements) = yaml::items(node) else {
            self.err(Mark::of(node), "`plugins` must be a list");
            return None;
        };
        let mut out: Vec<Item<PluginConfig>> = Vec::new();
        for el in elements {
            let at = Mark::of(el);
            let Some(map) = el.as_mapping() else {
                self.err(
                    at,
                    "a plugin is a mapping with a `name` (e.g. `- name: routing`)",
                );
                continue;
            };
            let Some(name_node) = map.get_scalar("name") else {
                self.err(at, "a plugin needs a `name`");
                continue;
            };
            let name = name_node.as_str();
            let name_mark = Mark::of_scalar(name_node);
            if let Some(prev) = out.iter().find(|p| p.value.name() == name) {
                self.err(
                    name_mark,
                    format!(
                        "plugin `{name}` is listed twice (first at line {})",
                        prev.at.line
                    ),
                );
                continue;
            }
            let mut settings = el.clone();
            if let Some(m) = settings.as_mapping_mut() {
                m.remove("name");
            }
            match PluginConfig::deserialize_named(name, yaml::NodeDe::new(&settings)) {
                None => self.err(
                    name_mark,
                    format!(
                        "unknown plugin `{name}`, expected one of: {}",
                        PluginConfig::NAMES.join(", ")
                    ),
                ),
                Some(Err(e)) => self.de_err(e, at),
                Some(Ok(value)) => out.push(Item {
                    value,
                    at,
                    keys: nested_key_marks(el),
                }),
            }
        }
        Some(out)
    }
}

fn is_null(node: &Node) -> bool {
    node.as_scalar().is_some_and(|s| {
        s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
    })
}

/// Where each key's value is written; keys of nested mappings as `outer.inner` (e.g.
/// `tls.cert`), so that errors about a nested setting point at its line.
fn key_marks(node: &Node) -> Vec<(String, Mark)> {
    let mut out = Vec::new();
    nested_marks(node, "", 0, &mut out);
    out
}

fn nested_marks(node: &Node, prefix: &str, depth: usize, out: &mut Vec<(String, Mark)>) {
    for (k, v) in yaml::entries(node) {
        let key = format!("{prefix}{}", k.as_str());
        out.push((key.clone(), Mark::of(v)));
        if depth < 3 && v.as_mapping().is_some() {
            nested_marks(v, &format!("{key}."), depth + 1, out);
        }
    }
}

/// Like [`key_marks`], and every nested key too, as dotted paths with list indexes
/// (`session.apps.1.secret_env`), so plugins can point at nested settings.
fn nested_key_marks(node: &Node) -> Vec<(String, Mark)> {
    fn walk(node: &Node, prefix: &str, depth: usize, out: &mut Vec<(String, Mark)>) {
        // Plugin settings are shallow; the bound keeps a hostile file cheap.
        if depth > 8 {
            return;
        }
        let mut push = |key: String, child: &Node| {
            out.push((key.clone(), Mark::of(child)));
            walk(child, &key, depth + 1, out);
        };
        let join = |k: &str| {
            if prefix.is_empty() {
                k.to_string()
            } else {
                format!("{prefix}.{k}")
            }
        };
        if let Some(list) = yaml::items(node) {
            for (i, child) in list.iter().enumerate() {
                push(join(&i.to_string()), child);
            }
        } else {
            for (k, child) in yaml::entries(node) {
                push(join(k.as_str()), child);
            }
        }
    }
    let mut out = Vec::new();
    walk(node, "", 0, &mut out);
    out
}

/// Every `*_env: NAME` in the tree (secrets are named in the file, never written in it), in
/// file order.
fn env_vars(root: &Node) -> Vec<(String, Mark)> {
    fn walk(node: &Node, depth: usize, out: &mut Vec<(String, Mark)>) {
        if depth > 16 {
            return;
        }
        if let Some(list) = yaml::items(node) {
            list.iter().for_each(|n| walk(n, depth + 1, out));
        }
        for (k, v) in yaml::entries(node) {
            match v.as_scalar() {
                Some(s) if k.as_str().ends_with("_env") => {
                    out.push((s.as_str().to_string(), Mark::of(v)));
                }
                _ => walk(v, depth + 1, out),
            }
        }
    }
    let mut out = Vec::new();
    walk(root, 0, &mut out);
    out
}

fn default_item<T: Default>(at: Mark) -> Item<T> {
    Item {
        value: T::default(),
        at,
        keys: Vec::new(),
    }
}

/// Parses config text; `path` names it in errors and anchors relative paths. Only a YAML
/// syntax error fails outright; schema errors are kept in `parse_errors` so that the
/// cross-checks can still run and everything is reported at once.
pub fn load_str(path: &Path, text: &str) -> Result<FileConfig, ConfigErrors> {
    load_named(path, &path.display().to_string(), text)
}

/// Like [`load_str`] for text that is not the file at `anchor` (the config document in
/// etcd): `name` names it in errors, `anchor`'s directory anchors relative paths.
pub fn load_named(anchor: &Path, name: &str, text: &str) -> Result<FileConfig, ConfigErrors> {
    let mut l = Loader {
        name: name.to_string(),
        errors: Vec::new(),
    };
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            l.de_err(e, Mark { line: 1, col: 1 });
            return Err(ConfigErrors(l.errors));
        }
    };
    let start = Mark::of(&root);
    let mut cfg = FileConfig {
        path: anchor.to_path_buf(),
        name: l.name.clone(),
        env: None,
        listen: default_item(start),
        server: default_item(start),
        default_domain_suffix: None,
        domains: Vec::new(),
        instances: Vec::new(),
        routes: Vec::new(),
        limits: default_item(start),
        timeouts: default_item(start),
        plugins: None,
        tls: default_item(start),
        acme: None,
        admin: default_item(start),
        streams: Vec::new(),
        config_source: None,
        top_keys: Vec::new(),
        incomplete: Incomplete::default(),
        parse_errors: Vec::new(),
        env_vars: env_vars(&root),
    };
    for (key, value) in yaml::entries(&root) {
        cfg.top_keys
            .push((key.as_str().to_string(), Mark::of_scalar(key)));
        match key.as_str() {
            "env" => cfg.env = l.item(value),
            "default_domain_suffix" => cfg.default_domain_suffix = l.item(value),
            "listen" => cfg.listen = l.item(value).unwrap_or(cfg.listen),
            "server" => cfg.server = l.item(value).unwrap_or(cfg.server),
            "limits" => cfg.limits = l.item(value).unwrap_or(cfg.limits),
            "timeouts" => cfg.timeouts = l.item(value).unwrap_or(cfg.timeouts),
            "tls" => cfg.tls = l.item(value).unwrap_or(cfg.tls),
            "acme" => {
                cfg.acme = l.item(value);
                cfg.incomplete.acme = cfg.acme.is_none();
            }
            "admin" => cfg.admin = l.item(value).unwrap_or(cfg.admin),
            "domains" => {
                let (v, failed) = l.list::<model::Domain>(value, "domains");
                cfg.domains = v;
                cfg.incomplete.domains = failed;
            }
            "instances" => {
                let (v, failed) = l.list::<model::Instance>(value, "instances");
                cfg.instances = v;
                cfg.incomplete.instances = failed;
            }
            "routes" => cfg.routes = l.list::<model::Route>(value, "routes").0,
            "streams" => cfg.streams = l.list(value, "streams").0,
            "config_source" => cfg.config_source = l.item(value),
            "plugins" => {
                let before = l.errors.len();
                cfg.plugins = l.plugins(value);
                cfg.incomplete.plugins = l.errors.len() > before;
            }
            other => l.err(
                Mark::of_scalar(key),
                format!(
                    "unknown key `{other}`, expected one of: {}",
                    TOP_KEYS.join(", ")
                ),
            ),
        }
    }
    cfg.parse_errors = l.errors;
    Ok(cfg)
}
