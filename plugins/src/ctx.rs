//! The per-request context: everything one request's plugins share.

use crate::error::ErrorCode;
use crate::routes::{Instance, Route, RouteTable};
use crate::Limits;
use bytes::Bytes;
use http::HeaderValue;
use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a request entered: a Mini Program SDK call, an HTTP access request, or not routed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Entry {
    #[default]
    None,
    Sdk,
    Http,
}

impl Entry {
    /// The `entry` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Entry::None => "none",
            Entry::Sdk => "sdk",
            Entry::Http => "http",
        }
    }
}

/// A verified caller identity (SPEC §5), filled in by the identity plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The app the token was issued for.
    pub appid: String,
    pub openid: String,
    pub unionid: Option<String>,
    /// `Some(owner appid)` when the caller came through a shared app (resource sharing).
    pub shared_from_owner: Option<String>,
    /// The identity headers to send upstream, made once when the identity is verified (the
    /// User-Agent dependent ones are added per request).
    pub headers: Vec<(http::HeaderName, &'static str, http::HeaderValue)>,
}

/// Per-request state, created when the request starts and dropped when it is logged.
pub struct Ctx {
    pub start: Instant,
    /// The wall-clock time of `start` since the Unix epoch, read with it: the request id's
    /// time, the token expiry check and the access log's `time` share this one read.
    pub unix_start: Duration,
    /// The snapshot generation this request runs on, start to end.
    pub generation: u64,
    /// That snapshot's route table and body limits.
    pub routes: Option<Arc<RouteTable>>,
    pub limits: Limits,
    request_id: Option<HeaderValue>,
    /// Whether the request arrived over TLS.
    pub tls: bool,
    /// The TCP peer, canonical.
    pub peer_ip: Option<IpAddr>,
    /// The client as SPEC §6 computes it (the peer until forwarded_for says otherwise).
    pub client_ip: Option<IpAddr>,
    /// `client_ip` as text, once `forwarded_for` wrote it for `X-Real-IP` (the access log
    /// reuses it).
    pub client_ip_text: Option<HeaderValue>,
    /// The `X-WX-SERVICE` value the client sent, read before owned headers are stripped.
    pub wx_service: Option<HeaderValue>,
    /// The host the client asked for: the target's authority, else the first `Host` value.
    /// Read once before the chain runs (the runner's walk over the request's fields), for
    /// routing and the plugins and the console that report it.
    pub host: Option<HeaderValue>,
    /// Whether the request carried more than one `Host` field (routing refuses it).
    pub host_repeated: bool,
    /// The first `User-Agent` value, read in the same walk (identity, the access log).
    pub user_agent: Option<HeaderValue>,
    /// The request's `Content-Length`, as the runner read it (routing's body limit).
    pub declared_length: Option<u64>,
    /// Whether the peer is a trusted front whose `X-WX-*` headers are kept (identity plugin).
    pub trusted_front: bool,
    /// Whether the client's request may carry forwarding headers (`X-Forwarded-*`,
    /// `Forwarded`, `X-Real-IP`). The runner's walk over the names clears it when there are
    /// none, so that `forwarded_for` need not walk them again.
    pub forwarding_sent: bool,
    pub identity: Option<Arc<Identity>>,
    pub entry: Entry,
    pub route: Option<Arc<Route>>,
    pub instance: Option<Arc<Instance>>,
    /// The origin-form target to send upstream, when it differs from the client's.
    pub upstream_target: Option<bytes::Bytes>,
    /// When the request header went to the upstream, and what came back.
    pub upstream_sent: Option<Instant>,
    pub upstream_status: Option<u16>,
    pub upstream_timecost: Option<Duration>,
    /// The error this request ended with, if anygate answered with one.
    pub error: Option<ErrorCode>,
    /// The status sent to the client.
    pub status: u16,
    /// Request body bytes received so far.
    pub request_body_bytes: u64,
    /// The body limit that applies to this request, once routed.
    pub body_limit: Option<u64>,
    /// CORS response headers decided in the request phase (cors plugin), wire-case names.
    pub cors_headers: Vec<(&'static str, HeaderValue)>,
    /// The request's duration, fixed at its end by [`Ctx::finish`] (before the logging phase),
    /// so that the access log, the metrics and the console share one clock read and one
    /// duration.
    duration: Option<Duration>,
}

impl Ctx {
    /// The request's duration: to its end once [`Ctx::finish`] set it, else to now.
    pub fn elapsed(&self) -> Duration {
        match self.duration {
            Some(d) => d,
            None => Instant::now().saturating_duration_since(self.start),
        }
    }

    /// Ends the request at `end` (an end before the start reads as zero).
    pub fn finish(&mut self, end: Instant) {
        self.duration = Some(end.saturating_duration_since(self.start));
    }

    pub fn new(generation: u64) -> Ctx {
        let start = Instant::now();
        Ctx {
            start,
            unix_start: unix_time(start),
            generation,
            routes: None,
            limits: Limits::default(),
            request_id: None,
            tls: false,
            peer_ip: None,
            client_ip: None,
            client_ip_text: None,
            wx_service: None,
            host: None,
            host_repeated: false,
            user_agent: None,
            declared_length: None,
            trusted_front: false,
            forwarding_sent: true,
            identity: None,
            entry: Entry::None,
            route: None,
            instance: None,
            upstream_target: None,
            upstream_sent: None,
            upstream_status: None,
            upstream_timecost: None,
            error: None,
            status: 0,
            request_body_bytes: 0,
            body_limit: None,
            duration: None,
            cors_headers: Vec::new(),
        }
    }

    /// The request id (SPEC §7), made on first use.
    pub fn request_id(&mut self) -> &HeaderValue {
        let ms = self.unix_start.as_millis() as u64;
        self.request_id.get_or_insert_with(|| new_request_id_at(ms))
    }

    /// The host of `req` as [`Ctx::host`] keeps it.
    pub fn host_of(req: &pingora_http::RequestHeader) -> Option<HeaderValue> {
        match req.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => req.headers.get(http::header::HOST).cloned(),
        }
    }

    /// The request id if one was made.
    pub fn request_id_str(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    /// The request id's bytes, if one was made (no UTF-8 check: it is made of hex digits).
    pub fn request_id_bytes(&self) -> Option<&[u8]> {
        self.request_id.as_ref().map(|v| v.as_bytes())
    }

    /// The `route` metric label: the route that matched, else `none`.
    pub fn route_label(&self) -> &str {
        self.route.as_ref().map_or("none", |r| r.label.as_str())
    }

    /// The `instance` metric label.
    pub fn instance_label(&self) -> &str {
        self.instance.as_ref().map_or("none", |i| i.id.as_str())
    }
}

/// The eight lower-case hex digits of `x`, most significant first, eight at a time: the
/// nibbles are spread one per byte, then each becomes `0`-`9` or `a`-`f` by arithmetic
/// (the `a`-`f` bytes are those where adding 6 carries into bit 4).
fn hex8(x: u32) -> [u8; 8] {
    let mut v = u64::from(x);
    v = ((v & 0xffff_0000) << 16) | (v & 0xffff);
    v = ((v & 0x0000_ff00_0000_ff00) << 8) | (v & 0x0000_00ff_0000_00ff);
    v = ((v & 0x00f0_00f0_00f0_00f0) << 4) | (v & 0x000f_000f_000f_000f);
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (v + 0x3030_3030_3030_3030 + letters * 0x27).to_be_bytes()
}

/// `hi` and `lo` as a UUID's text: 8-4-4-4-12 lower-case hex digits.
fn uuid_text(hi: u64, lo: u64) -> [u8; 36] {
    let mut out = [b'-'; 36];
    let (a, b) = (hex8((hi >> 32) as u32), hex8(hi as u32));
    let (c, d) = (hex8((lo >> 32) as u32), hex8(lo as u32));
    out[..8].copy_from_slice(&a);
    out[9..13].copy_from_slice(&b[..4]);
    out[14..18].copy_from_slice(&b[4..]);
    out[19..23].copy_from_slice(&c[..4]);
    out[24..28].copy_from_slice(&c[4..]);
    out[28..].copy_from_slice(&d);
    out
}

/// How long a thread uses the offset between the monotonic and the wall clock before it
/// reads the wall clock again.
const WALL_RESYNC: Duration = Duration::from_secs(1);

/// The wall-clock time (since the Unix epoch) of `at`, an `Instant` just read, without a
/// wall-clock read per request: each thread keeps the two clocks' offset and takes it again
/// once a second, so an NTP step is followed within a second (a slew, at most 0.05%, moves it
/// by less than a millisecond in that second).
pub fn unix_time(at: Instant) -> Duration {
    thread_local! {
        static BASE: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
    }
    BASE.with(|b| {
        let (base, unix) = match b.get() {
            Some((base, unix)) if at.saturating_duration_since(base) < WALL_RESYNC => (base, unix),
            _ => {
                let base = Instant::now();
                let unix = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                b.set(Some((base, unix)));
                (base, unix)
            }
        };
        match at.checked_duration_since(base) {
            Some(since) => unix + since,
            None => unix.saturating_sub(base - at),
        }
    })
}

/// A UUIDv7-shaped id: 48 bits of Unix milliseconds (so ids sort by time), then 74 random bits.
pub fn new_request_id() -> HeaderValue {
    new_request_id_at(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

/// [`new_request_id`] for a request that arrived at `ms` (Unix milliseconds).
pub fn new_request_id_at(ms: u64) -> HeaderValue {
    let rand_hi = fastrand::u64(..);
    let rand_lo = fastrand::u64(..);
    let hi: u64 = (ms << 16) | 0x7000 | (rand_hi & 0x0fff);
    let lo: u64 = (rand_lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let out = uuid_text(hi, lo);
    // Owned by its `Bytes` from the start: the id is cloned into the upstream request and the
    // response, and a clone of a copied slice would allocate again to become shared.
    let mut id = HeaderValue::from_maybe_shared(Bytes::from_owner(out))
        .unwrap_or_else(|_| HeaderValue::from_static("-"));
    // Never the same twice: over HTTP/2, HPACK sends it as a literal that is never indexed,
    // instead of inserting every id into the connection's dynamic table, where each one
    // evicted the entries worth keeping (the other X-Cloudbase-* values, Date, Server), which
    // then went in again on the next response, on both ends of the connection.
    id.set_sensitive(true);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_time_follows_the_wall_clock() {
        let wall = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let slack = Duration::from_millis(2);
        for _ in 0..1000 {
            let before = wall();
            let t = unix_time(Instant::now());
            let after = wall();
            assert!(
                t + slack >= before && t <= after + slack,
                "{t:?} not in {before:?}..{after:?}"
            );
        }
        // An instant before the thread's base (read with that base), and one past the resync:
        // each read as its distance from now.
        let now = Instant::now();
        let t = unix_time(now);
        let earlier = now.checked_sub(Duration::from_secs(3)).unwrap_or(now);
        assert_eq!(t - unix_time(earlier), now - earlier);
        let later = now + Duration::from_secs(5);
        let d = unix_time(later).as_secs_f64() - t.as_secs_f64();
        assert!((d - 5.0).abs() < 0.01, "{d}");
    }

    #[test]
    fn request_ids_are_uuid_v7_unique_and_time_ordered() {
        let a = new_request_id();
        std::thread::sleep(Duration::from_millis(2));
        let b = new_request_id();
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7", "version nibble");
        for (i, c) in a.char_indices() {
            let dash = matches!(i, 8 | 13 | 18 | 23);
            assert_eq!(c == '-', dash, "{a}: {i}");
            assert!(
                dash || c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
                "{a}: {i}"
            );
        }
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "variant");
        assert!(a < b, "{a} then {b}");
        let many: std::collections::HashSet<String> = (0..10_000)
            .map(|_| new_request_id().to_str().unwrap().to_string())
            .collect();
        assert_eq!(many.len(), 10_000);
    }

    #[test]
    fn uuid_text_is_the_hex_of_both_halves() {
        let cases = [
            (0, 0),
            (u64::MAX, u64::MAX),
            (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210),
            (0x0192_f0a1_b2c3_7d4e, 0x8a9b_0c1d_2e3f_4051),
            (0x0a0b_0c0d_0e0f_1a2b, 0x9f8e_7d6c_5b4a_3928),
        ];
        for (hi, lo) in cases
            .into_iter()
            .chain((0..1000).map(|_| (fastrand::u64(..), fastrand::u64(..))))
        {
            let h = format!("{hi:016x}{lo:016x}");
            let want = format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            );
            assert_eq!(std::str::from_utf8(&uuid_text(hi, lo)).unwrap(), want);
        }
    }

    #[test]
    fn the_duration_stops_at_the_end_once_set() {
        let mut ctx = Ctx::new(1);
        assert!(ctx.elapsed() >= Duration::ZERO);
        ctx.finish(ctx.start + Duration::from_millis(1234));
        assert_eq!(ctx.elapsed(), Duration::from_millis(1234));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(ctx.elapsed(), Duration::from_millis(1234));
        // An end before the start (it cannot happen) reads as zero, not a panic.
        ctx.start += Duration::from_millis(5);
        ctx.finish(ctx.start - Duration::from_millis(5));
        assert_eq!(ctx.elapsed(), Duration::ZERO);
    }

    #[test]
    fn request_id_is_stable_within_a_request() {
        let mut ctx = Ctx::new(1);
        assert_eq!(ctx.request_id_str(), "-");
        assert_eq!(ctx.request_id_bytes(), None);
        let first = ctx.request_id().clone();
        // Never indexed by HPACK (unique per request), and its clones stay so.
        assert!(first.is_sensitive() && first.clone().is_sensitive());
        assert_eq!(ctx.request_id_bytes(), Some(first.as_bytes()));
        assert_eq!(ctx.request_id(), &first);
        assert_eq!(ctx.request_id_str(), first.to_str().unwrap());
    }
}
