//! `access_log`: one JSON line per request, to stdout or a file, written off the request path
//! (see [`crate::log_writer`]). Recorded in the logging phase, so anygate's own answers are
//! logged like proxied ones.

use crate::ctx::Ctx;
use crate::log_writer::{LogWriter, Sink};
use crate::net::write_ip;
use crate::plugin::{Phases, Plugin, Served};
use crate::{BuildCtx, PluginError};
use http::HeaderValue;
use serde::Deserialize;
use std::io::Write;
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

/// Milliseconds with microsecond precision.
#[cfg(test)]
fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// A JSON string, escaped per RFC 8259 (bytes that are not UTF-8 become U+FFFD).
fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    if is_plain(s) {
        out.extend_from_slice(s);
    } else {
        for c in String::from_utf8_lossy(s).chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
    }
    out.push(b'"');
}

/// Whether `s` is printable ASCII without `"` or `\\` (written as is), eight bytes at a time:
/// user agents and paths run to hundreds of bytes on every line. Texts from the config (route
/// labels, instance ids) are checked once, when the route table is built.
pub(crate) fn is_plain(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether any byte of `w` is zero (exact for "any", per byte possibly not).
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH != 0;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // A byte >= 0x80, or one below 0x20 (the classic "has less than" word test, exact
        // for whether any byte is), or `"`, or `\\`.
        if w & HIGH != 0
            || w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0
            || has_zero(w ^ (ONES * u64::from(b'"')))
            || has_zero(w ^ (ONES * u64::from(b'\\')))
        {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
}

/// A JSON string anygate wrote itself (a time, an address, a request id, a method, a label):
/// ASCII without `"`, `\\` or controls, so it needs no escaping and no check.
fn push_own(out: &mut Vec<u8>, s: &[u8]) {
    debug_assert!(is_plain(s), "{s:?}");
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
}

fn push_opt_own(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => push_own(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A text from the config, whose check was made when the route table was built.
fn push_opt_checked(out: &mut Vec<u8>, s: Option<(&str, bool)>) {
    match s {
        Some((s, true)) => push_own(out, s.as_bytes()),
        Some((s, false)) => push_str(out, s.as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_opt_str(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    // Statuses, small byte counts and whole milliseconds have one to three digits: written as
    // fixed-size pieces, they need no call to `memcpy` (whose size dispatch mispredicts on
    // lengths that change from field to field).
    let digit = |d: u64| b'0' + d as u8;
    if n < 10 {
        out.push(digit(n));
        return;
    }
    if n < 100 {
        out.extend_from_slice(&[digit(n / 10), digit(n % 10)]);
        return;
    }
    if n < 1000 {
        out.extend_from_slice(&[digit(n / 100), digit(n / 10 % 10), digit(n % 10)]);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Milliseconds with three decimals (microsecond precision), as a JSON number.
fn push_ms(out: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros() as u64;
    push_u64(out, us / 1000);
    let frac = us % 1000;
    out.push(b'.');
    out.push(b'0' + (frac / 100) as u8);
    out.push(b'0' + (frac / 10 % 10) as u8);
    out.push(b'0' + (frac % 10) as u8);
}

/// Writes the line for one finished request into `out`: a JSON object whose absent values are
/// `null`, with `openid` only under `include_openid`. Written by hand: it runs per request, and
/// a generic serializer costs several times more.
fn line(served: &Served, ctx: &Ctx, include_openid: bool, out: &mut Vec<u8>) {
    let elapsed = ctx.elapsed();
    let mut time = [0u8; 24];
    let mut ip = [0u8; 46];
    let time = write_unix_millis(ctx.unix_start, &mut time);
    // Always anygate's own (hex digits and dashes): no request id is taken from a client.
    let request_id = ctx.request_id_bytes();
    out.extend_from_slice(b"{\"time\":");
    push_own(out, time);
    out.extend_from_slice(b",\"request_id\":");
    push_opt_own(out, request_id);
    out.extend_from_slice(b",\"client_ip\":");
    match &ctx.client_ip_text {
        Some(text) => push_own(out, text.as_bytes()),
        None => push_opt_own(out, ctx.client_ip.map(|c| write_ip(c, &mut ip))),
    }
    out.extend_from_slice(b",\"method\":");
    // A method is a token (RFC 9110 §5.6.2): no `"`, `\\` or controls.
    push_opt_own(out, served.method());
    out.extend_from_slice(b",\"host\":");
    push_opt_str(out, ctx.host.as_ref().map(HeaderValue::as_bytes));
    out.extend_from_slice(b",\"path\":");
    push_opt_str(out, served.path());
    out.extend_from_slice(b",\"entry\":");
    push_own(out, ctx.entry.label().as_bytes());
    out.extend_from_slice(b",\"route\":");
    push_opt_checked(out, ctx.route.as_ref().map(|r| (&*r.label, r.label_plain)));
    out.extend_from_slice(b",\"instance\":");
    push_opt_checked(out, ctx.instance.as_ref().map(|i| (&*i.id, i.id_plain)));
    out.extend_from_slice(b",\"status\":");
    push_u64(out, u64::from(served.status));
    out.extend_from_slice(b",\"upstream_status\":");
    match ctx.upstream_status {
        Some(s) => push_u64(out, u64::from(s)),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"upstream_timecost_ms\":");
    match ctx.upstream_timecost {
        Some(d) => push_ms(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"duration_ms\":");
    push_ms(out, elapsed);
    out.extend_from_slice(b",\"bytes_sent\":");
    push_u64(out, served.body_bytes as u64);
    out.extend_from_slice(b",\"user_agent\":");
    push_opt_str(out, ctx.user_agent.as_ref().map(HeaderValue::as_bytes));
    out.extend_from_slice(b",\"error\":");
    push_opt_own(out, ctx.error.map(|e| e.as_str().as_bytes()));
    if include_openid {
        out.extend_from_slice(b",\"openid\":");
        push_opt_str(out, ctx.identity.as_ref().map(|i| i.openid.as_bytes()));
    }
    out.extend_from_slice(b"}\n");
}

thread_local! {
    /// Each worker thread formats its lines in one reused buffer.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
}

impl Plugin for AccessLog {
    fn name(&self) -> &'static str {
        "access_log"
    }

    fn phases(&self) -> Phases {
        Phases::LOGGING
    }

    fn logging(&self, served: &Served, ctx: &Ctx, _error: Option<&pingora_error::Error>) {
        SCRATCH.with(|scratch| {
            let Ok(mut buf) = scratch.try_borrow_mut() else {
                return;
            };
            buf.clear();
            line(served, ctx, self.include_openid, &mut buf);
            if !buf.is_empty() {
                self.writer.write(&buf);
            }
        });
    }
}

/// `2026-01-02T03:04:05.678Z`
pub fn rfc3339_millis(t: SystemTime) -> String {
    let mut buf = [0u8; 24];
    String::from_utf8_lossy(write_rfc3339_millis(t, &mut buf)).into_owned()
}

/// Like [`rfc3339_millis`], into a buffer, as ASCII bytes (no `fmt`, no allocation, no UTF-8
/// check: it runs per request). The date and time of day are written once per second per
/// thread; each call adds the milliseconds.
pub fn write_rfc3339_millis(t: SystemTime, buf: &mut [u8; 24]) -> &[u8] {
    write_unix_millis(t.duration_since(UNIX_EPOCH).unwrap_or_default(), buf)
}

/// [`write_rfc3339_millis`] for a time given since the Unix epoch.
pub fn write_unix_millis(d: Duration, buf: &mut [u8; 24]) -> &[u8] {
    let secs = d.as_secs();
    LAST_SECOND.with(|last| {
        let (at, text) = last.get();
        if at == secs && at != 0 {
            buf[..20].copy_from_slice(&text);
        } else {
            write_second(secs, buf);
            let mut text = [0u8; 20];
            text.copy_from_slice(&buf[..20]);
            last.set((secs, text));
        }
    });
    let ms = d.subsec_millis();
    buf[20] = b'0' + (ms / 100) as u8;
    buf[21] = b'0' + (ms / 10 % 10) as u8;
    buf[22] = b'0' + (ms % 10) as u8;
    buf[23] = b'Z';
    &buf[..]
}

thread_local! {
    /// The last second this thread wrote, and its `YYYY-MM-DDTHH:MM:SS.` (0: none yet).
    static LAST_SECOND: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((0, [0; 20])) };
}

/// `YYYY-MM-DDTHH:MM:SS.` for `secs` since the epoch, into `buf[..20]`.
fn write_second(secs: u64, buf: &mut [u8; 24]) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(day));
    put(11, 2, rem / 3600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        buf[at] = c;
    }
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
        // The second is kept per thread: the same second again, the next one, and back.
        assert_eq!(at(1_709_251_199, 7), "2024-02-29T23:59:59.007Z");
        assert_eq!(at(1_709_251_200, 999), "2024-03-01T00:00:00.999Z");
        assert_eq!(at(1_709_251_199, 10), "2024-02-29T23:59:59.010Z");
        assert_eq!(at(0, 1), "1970-01-01T00:00:00.001Z");
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
        for (d, want) in [
            (1234, "1.234"),
            (2_000_000, "2000.000"),
            (5, "0.005"),
            (0, "0.000"),
        ] {
            let mut out = Vec::new();
            push_ms(&mut out, Duration::from_micros(d));
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn plain_strings_are_told_apart_eight_bytes_at_a_time() {
        let naive = |s: &[u8]| {
            s.iter()
                .all(|&b| (0x20..0x80).contains(&b) && b != b'"' && b != b'\\')
        };
        // Every byte value at every position of a 17-byte string of a plain letter.
        for at in 0..17 {
            for b in 0..=255u8 {
                let mut s = [b'a'; 17];
                s[at] = b;
                assert_eq!(is_plain(&s), naive(&s), "byte {b:#x} at {at}");
                assert_eq!(is_plain(&s[..at + 1]), naive(&s[..at + 1]));
            }
        }
        // Pairs next to each other (the subtraction borrows across bytes).
        for a in [0x00u8, 0x1f, 0x20, 0x21, 0x22, 0x5c, 0x7f, 0x80, 0xff] {
            for b in [0x00u8, 0x1f, 0x20, 0x21, 0x22, 0x5c, 0x7f, 0x80, 0xff] {
                let s = [b'x', b'x', b'x', a, b, b'x', b'x', b'x'];
                assert_eq!(is_plain(&s), naive(&s), "{a:#x} {b:#x}");
            }
        }
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        for s in [
            &b"plain"[..],
            b"with \"quotes\" and \\ back",
            b"ctl \n\r\t\x01\x1f\x7f end",
            "unicode \u{4f60}\u{597d}".as_bytes(),
            b"bad utf8 \xff\xfe",
        ] {
            let mut out = Vec::new();
            push_str(&mut out, s);
            let want = serde_json::to_string(&String::from_utf8_lossy(s)).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
        let mut out = Vec::new();
        for n in [0u64, 7, 9, 10, 42, 99, 100, 200, 999, 1000, 65535, u64::MAX] {
            out.clear();
            push_u64(&mut out, n);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), n.to_string());
        }
    }
}
