//! The process's logger: `env_logger` (`RUST_LOG`), with Pingora's own warnings and errors
//! limited per call site (one line per 10 s, the rest counted: see
//! `anygate_plugins::log_limit`). Pingora writes those per connection or per request (a
//! client hanging up mid-header, a failed TLS handshake), so without a limit whoever opens
//! connections decides how much is logged. anygate's own request-path lines are limited
//! where they are written.

use anygate_plugins::log_limit::{self, Admit, More};
use log::{Level, Log, Metadata, Record};

struct Limited(env_logger::Logger);

/// Whether a line is one of Pingora's per-connection or per-request ones. The limiter's own
/// summaries carry no source line: they always go through.
fn limited(r: &Record) -> bool {
    r.level() <= Level::Warn && r.target().starts_with("pingora") && r.line().is_some()
}

impl Log for Limited {
    fn enabled(&self, m: &Metadata) -> bool {
        self.0.enabled(m)
    }

    fn log(&self, r: &Record) {
        if !self.0.matches(r) {
            return;
        }
        if !limited(r) {
            return self.0.log(r);
        }
        let file = r.file().unwrap_or("");
        let line = r.line().unwrap_or(0);
        let key = log_limit::key(&[file.as_bytes(), &line.to_le_bytes()]);
        let label = || {
            let target = r.module_path_static().unwrap_or("pingora");
            // `…/registry/src/index…/pingora-proxy-0.9.1/src/lib.rs` → from `pingora-proxy`.
            let short = file.rfind("/pingora").map_or(file, |i| &file[i + 1..]);
            (r.level(), target, format!("{short}:{line}"))
        };
        match log_limit::admit(key, label) {
            Admit::Suppress => {}
            Admit::Write(More(0)) => self.0.log(r),
            Admit::Write(more) => self.0.log(
                &Record::builder()
                    .metadata(r.metadata().clone())
                    .module_path(r.module_path())
                    .file(r.file())
                    .line(r.line())
                    .args(format_args!("{}{more}", r.args()))
                    .build(),
            ),
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Installs the logger (`info` unless `RUST_LOG` says otherwise).
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Limited(inner))).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pingoras_own_warnings_and_errors_are_limited() {
        let at = |level, target: &'static str, line| {
            let r = Record::builder()
                .level(level)
                .target(target)
                .line(line)
                .build();
            limited(&r)
        };
        assert!(at(Level::Error, "pingora_proxy", Some(363)));
        assert!(at(Level::Warn, "pingora_core::listeners", Some(1)));
        assert!(!at(Level::Info, "pingora_core::server", Some(1)));
        assert!(!at(Level::Error, "anygate::reload", Some(1)));
        // A summary of a Pingora kind, written by the flush.
        assert!(!at(Level::Error, "pingora_proxy", None));
    }
}
