//! `access_log`: one JSON line per request, to stdout or a file, written off the request path
//! (see [`crate::log_writer`]). Recorded in the logging phase, so anygate's own answers are
//! logged like proxied ones.

use crate::ctx::Ctx;
use crate::log_writer::{LogWriter, Sink};
use crate::metrics::sent_status;
use crate::plugin::{Phases, Plugin};
use crate::{BuildCtx, PluginError};
use async_trait::async_trait;
use http::header::{HOST, USER_AGENT};
use pingora_proxy::Session;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `stdout`, or a file (relative paths are relative to the config file).
    #[serde(default = "stdout")]
    pub path: String,
    /// Log the caller's openid (personal data: off unless asked for).
    #[serde(default)]
    pub include_openid: bool,
}

fn stdout() -> String {
    "stdout".into()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: stdout(),
            include_openid: false,
        }
    }
}

impl Config {
    pub fn build(&self, cx: &BuildCtx) -> Result<AccessLog, PluginError> {
        let (sink, name) =
            Sink::open(&self.path, cx.config_dir).map_err(|m| PluginError::new("path", m))?;
        Ok(AccessLog {
            writer: LogWriter::new(Box::new(sink), name, cx.telemetry.clone()),
            include_openid: self.include_openid,
        })
    }
}

pub struct AccessLog {
    writer: LogWriter,
    include_openid: bool,
}

/// One line. Absent values are `null`; `openid` is there only with `include_openid`.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: Option<&'a str>,
    client_ip: Option<IpAddr>,
    method: &'a str,
    host: Option<Cow<'a, str>>,
    path: Cow<'a, str>,
    entry: &'a str,
    route: Option<&'a str>,
    instance: Option<&'a str>,
    status: u16,
    upstream_status: Option<u16>,
    upstream_timecost_ms: Option<f64>,
    duration_ms: f64,
    bytes_sent: usize,
    user_agent: Option<Cow<'a, str>>,
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    openid: Option<Option<&'a str>>,
}

/// Milliseconds with microsecond precision.
fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// Writes the line for one finished request into `out`.
fn line(session: &Session, ctx: &Ctx, include_openid: bool, out: &mut Vec<u8>) {
    let req = session.req_header();
    let elapsed = ctx.start.elapsed();
    let raw = req.raw_path();
    let path = &raw[..raw.iter().position(|&b| b == b'?').unwrap_or(raw.len())];
    let host = match req.uri.authority() {
        Some(a) => Some(Cow::Borrowed(a.as_str())),
        None => req
            .headers
            .get(HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes())),
    };
    let line = Line {
        time: rfc3339_millis(SystemTime::now().checked_sub(elapsed).unwrap_or(UNIX_EPOCH)),
        request_id: Some(ctx.request_id_str()).filter(|id| *id != "-"),
        client_ip: ctx.client_ip,
        method: req.method.as_str(),
        host,
        path: String::from_utf8_lossy(path),
        entry: ctx.entry.label(),
        route: ctx.route.as_ref().map(|r| r.label.as_str()),
        instance: ctx.instance.as_ref().map(|i| i.id.as_str()),
        status: sent_status(session, ctx),
        upstream_status: ctx.upstream_status,
        upstream_timecost_ms: ctx.upstream_timecost.map(ms),
        duration_ms: ms(elapsed),
        bytes_sent: session.as_ref().body_bytes_sent(),
        user_agent: req
            .headers
            .get(USER_AGENT)
            .map(|h| String::from_utf8_lossy(h.as_bytes())),
        error: ctx.error.map(|e| e.as_str()),
        openid: include_openid.then(|| ctx.identity.as_ref().map(|i| i.openid.as_str())),
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

thread_local! {
    /// Each worker thread formats its lines in one reused buffer.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
}

#[async_trait]
impl Plugin for AccessLog {
    fn name(&self) -> &'static str {
        "access_log"
    }

    fn phases(&self) -> Phases {
        Phases::LOGGING
    }

    fn logging(&self, session: &Session, ctx: &Ctx, _error: Option<&pingora_error::Error>) {
        SCRATCH.with(|scratch| {
            let Ok(mut buf) = scratch.try_borrow_mut() else {
                return;
            };
            buf.clear();
            line(session, ctx, self.include_openid, &mut buf);
            if !buf.is_empty() {
                self.writer.write(&buf);
            }
        });
    }
}

/// `2026-01-02T03:04:05.678Z`
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> String {
        rfc3339_millis(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_700_000_000, 123), "2023-11-14T22:13:20.123Z");
        assert_eq!(at(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
        assert_eq!(at(1_709_251_199, 0), "2024-02-29T23:59:59.000Z");
    }

    #[test]
    fn config_defaults_to_stdout_without_openid() {
        let c: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.path, "stdout");
        assert!(!c.include_openid);
        assert!(serde_json::from_str::<Config>(r#"{"paht": "x"}"#).is_err());
    }

    #[test]
    fn durations_are_milliseconds_with_microseconds() {
        assert_eq!(ms(Duration::from_micros(1234)), 1.234);
        assert_eq!(ms(Duration::from_secs(2)), 2000.0);
    }
}
