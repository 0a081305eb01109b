//! What a compile is for: serving (`run`, reloads) refuses what the running gateway could not
//! use; checking (`anygate check`) turns what only the checking machine lacks into warnings.

use super::{address, build, EnvLookup, Errors, Resolver, Snapshot};
use crate::config::{ConfigError, ConfigErrors, FileConfig, Mark};
use anygate_plugins::telemetry::Telemetry;
use std::sync::Arc;

/// What `compile` is for. `Serve` (`run` and every reload) refuses anything the running
/// gateway could not use. `Check` (`anygate check`) checks the file on a machine that may lack
/// the production environment: an unset secret variable or an instance name that does not
/// resolve there is a warning, checked with a stand-in value, so that everything else is still
/// checked in the same run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Purpose {
    #[default]
    Serve,
    Check,
}

/// The result of [`compile_with`]: the snapshot or every error, and the warnings (only in
/// `Check`), all sorted by position.
pub struct Compiled {
    pub snapshot: Result<Snapshot, ConfigErrors>,
    pub warnings: Vec<ConfigError>,
}

/// A variable a compile asked for and did not find gets this stand-in, long enough for a
/// token key and valid in a header, so that whatever needs it is still built and checked.
use anygate_plugins::STAND_IN_SECRET;

/// [`compile`] for a purpose; `Check` also returns warnings.
pub fn compile_with(
    file: &FileConfig,
    generation: u64,
    env: EnvLookup,
    telemetry: &Arc<Telemetry>,
    previous: Option<&Snapshot>,
    purpose: Purpose,
) -> Compiled {
    let system = |host: &str, port: u16| address::resolve(host, port);
    compile_resolving(file, generation, env, telemetry, previous, purpose, &system)
}

/// [`compile_with`] without the network: a host name is never resolved (it is reported like
/// one that does not resolve). For the fuzz targets, which must not send DNS queries.
pub fn compile_offline(
    file: &FileConfig,
    env: EnvLookup,
    telemetry: &Arc<Telemetry>,
    purpose: Purpose,
) -> Compiled {
    let offline = |host: &str, _port: u16| Err(format!("cannot resolve `{host}`: offline"));
    compile_resolving(file, 1, env, telemetry, None, purpose, &offline)
}

pub(super) fn compile_resolving(
    file: &FileConfig,
    generation: u64,
    env: EnvLookup,
    telemetry: &Arc<Telemetry>,
    previous: Option<&Snapshot>,
    purpose: Purpose,
    resolve: Resolver,
) -> Compiled {
    // An unset variable reads as a stand-in and is remembered, so whatever needs it (an
    // instance, a plugin) is still built and checked, and every unset variable is reported at
    // once: as an error when serving (the snapshot is then dropped), a warning when checking.
    let missing = std::cell::RefCell::new(Vec::<String>::new());
    let lenient = |var: &str| match env(var) {
        Some(v) if !v.trim().is_empty() => Some(v),
        _ => {
            let mut m = missing.borrow_mut();
            if !m.iter().any(|x| x == var) {
                m.push(var.to_string());
            }
            Some(STAND_IN_SECRET.to_string())
        }
    };
    let mut e = Errors {
        file,
        list: file.parse_errors.clone(),
        warnings: Vec::new(),
        purpose,
        resolve,
    };
    let snapshot = build(&mut e, file, generation, &lenient, telemetry, previous);
    for var in missing.into_inner() {
        let named: Vec<Mark> = file
            .env_vars
            .iter()
            .filter(|(v, _)| *v == var)
            .map(|(_, m)| *m)
            .collect();
        let marks = if named.is_empty() {
            vec![Mark { line: 1, col: 1 }]
        } else {
            named
        };
        let msg = format!("environment variable `{var}` is not set");
        for mark in marks {
            match purpose {
                Purpose::Serve => e.at(mark, msg.clone()),
                Purpose::Check => {
                    e.warn(mark, format!("{msg} (`run` refuses to start without it)"))
                }
            }
        }
    }
    let mut warnings = e.warnings;
    warnings.sort_by_key(|x| (x.mark.line, x.mark.col));
    warnings.dedup();
    let mut list = e.list;
    let snapshot = if list.is_empty() {
        snapshot.ok_or_else(|| {
            ConfigErrors(vec![
                file.error(Mark { line: 1, col: 1 }, "internal: no route table")
            ])
        })
    } else {
        list.sort_by_key(|x| (x.mark.line, x.mark.col));
        list.dedup();
        Err(ConfigErrors(list))
    };
    Compiled { snapshot, warnings }
}

/// Checks the settings bound at start (`listen`, `server`) of a file on their own: a cluster
/// bootstrap file, whose config document lives elsewhere.
pub fn check_fixed(
    file: &FileConfig,
) -> Result<(super::Listeners, super::ServerSettings), Vec<ConfigError>> {
    let no_names = |host: &str, _: u16| Err(format!("`{host}` is not resolved here"));
    let mut e = Errors {
        file,
        list: Vec::new(),
        warnings: Vec::new(),
        purpose: Purpose::Serve,
        resolve: &no_names,
    };
    let fixed = super::fixed_settings(&mut e, file);
    match e.list.is_empty() {
        true => Ok(fixed),
        false => Err(e.list),
    }
}
