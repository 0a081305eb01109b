//! The recent-request buffer (SPEC §12 `admin.recent_requests`): a fixed ring of slots, each
//! behind its own small lock. A request takes the next slot with one atomic add and copies its
//! facts into the slot's buffers, made at start with room for typical values (only a longer
//! value allocates, once, and the slot keeps that room); an admin lookup scans the ring slot
//! by slot. Lives as long as the process (reloads keep
//! it), and is lost on restart: the access log is the durable record.

use anygate_plugins::{Entry, ErrorCode};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Longest values kept (longer ones are cut; a path is kept up to its first 1 KB).
pub const MAX_HOST: usize = 255;
pub const MAX_PATH: usize = 1024;
pub const MAX_ROUTE: usize = 384;
pub const MAX_INSTANCE: usize = 128;
const MAX_METHOD: usize = 16;
const ID_LEN: usize = 36;

/// What a request leaves in the buffer, borrowed from the request while it is logged.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fields<'a> {
    pub request_id: &'a [u8],
    /// Unix microseconds of the request's start.
    pub start_us: u64,
    pub entry: Entry,
    pub method: &'a [u8],
    pub host: Option<&'a [u8]>,
    pub path: &'a [u8],
    pub route: Option<&'a str>,
    pub instance: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    /// Whole milliseconds, as `X-Cloudbase-Upstream-Timecost` says.
    pub upstream_timecost_ms: Option<u64>,
    pub error: Option<ErrorCode>,
    /// The `kind` of an instance failure (`connect_refused`, `timeout`...).
    pub upstream_error: Option<&'static str>,
    pub duration_us: u64,
    pub generation: u64,
}

struct Slot {
    /// 0: never written; else the record's sequence number + 1.
    seq: u64,
    id: [u8; ID_LEN],
    id_len: u8,
    method: [u8; MAX_METHOD],
    method_len: u8,
    start_us: u64,
    entry: Entry,
    /// Buffers reused from record to record; `has_*` says whether the value is there.
    host: Vec<u8>,
    has_host: bool,
    path: Vec<u8>,
    route: Vec<u8>,
    has_route: bool,
    instance: Vec<u8>,
    has_instance: bool,
    client_ip: Option<IpAddr>,
    status: u16,
    upstream_status: Option<u16>,
    upstream_timecost_ms: Option<u64>,
    error: Option<ErrorCode>,
    upstream_error: Option<&'static str>,
    duration_us: u64,
    generation: u64,
}

/// Replaces `dst`'s content by `src` cut to `max` bytes, reusing its allocation; returns
/// whether there was a value.
fn put(dst: &mut Vec<u8>, src: Option<&[u8]>, max: usize) -> bool {
    dst.clear();
    match src {
        Some(s) => {
            dst.extend_from_slice(&s[..s.len().min(max)]);
            true
        }
        None => false,
    }
}

/// Room made in each slot up front, so that typical values never allocate: a host, a path, a
/// route name and an instance id of these lengths or shorter.
const ROOM_HOST: usize = 64;
const ROOM_PATH: usize = 128;
const ROOM_ROUTE: usize = 64;
const ROOM_INSTANCE: usize = 32;

impl Default for Slot {
    fn default() -> Self {
        Slot {
            seq: 0,
            id: [0; ID_LEN],
            id_len: 0,
            method: [0; MAX_METHOD],
            method_len: 0,
            start_us: 0,
            entry: Entry::None,
            host: Vec::with_capacity(ROOM_HOST),
            has_host: false,
            path: Vec::with_capacity(ROOM_PATH),
            route: Vec::with_capacity(ROOM_ROUTE),
            has_route: false,
            instance: Vec::with_capacity(ROOM_INSTANCE),
            has_instance: false,
            client_ip: None,
            status: 0,
            upstream_status: None,
            upstream_timecost_ms: None,
            error: None,
            upstream_error: None,
            duration_us: 0,
            generation: 0,
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Slot {
    fn write(&mut self, seq: u64, f: &Fields) {
        self.seq = seq + 1;
        let n = f.request_id.len().min(ID_LEN);
        self.id[..n].copy_from_slice(&f.request_id[..n]);
        self.id_len = n as u8;
        let m = f.method.len().min(MAX_METHOD);
        self.method[..m].copy_from_slice(&f.method[..m]);
        self.method_len = m as u8;
        self.start_us = f.start_us;
        self.entry = f.entry;
        self.has_host = put(&mut self.host, f.host, MAX_HOST);
        put(&mut self.path, Some(f.path), MAX_PATH);
        self.has_route = put(&mut self.route, f.route.map(str::as_bytes), MAX_ROUTE);
        self.has_instance = put(
            &mut self.instance,
            f.instance.map(str::as_bytes),
            MAX_INSTANCE,
        );
        self.client_ip = f.client_ip;
        self.status = f.status;
        self.upstream_status = f.upstream_status;
        self.upstream_timecost_ms = f.upstream_timecost_ms;
        self.error = f.error;
        self.upstream_error = f.upstream_error;
        self.duration_us = f.duration_us;
        self.generation = f.generation;
    }

    fn id(&self) -> &[u8] {
        &self.id[..usize::from(self.id_len)]
    }

    fn view(&self) -> Record {
        Record {
            request_id: (self.id_len > 0).then(|| text(self.id())),
            time: anygate_plugins::access_log::rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(self.start_us),
            ),
            entry: self.entry.label(),
            method: text(&self.method[..usize::from(self.method_len)]),
            host: self.has_host.then(|| text(&self.host)),
            path: text(&self.path),
            route: self.has_route.then(|| text(&self.route)),
            instance: self.has_instance.then(|| text(&self.instance)),
            client_ip: self.client_ip.map(|ip| ip.to_string()),
            status: self.status,
            upstream_status: self.upstream_status,
            upstream_timecost_ms: self.upstream_timecost_ms,
            error: self.error.map(ErrorCode::as_str),
            upstream_error: self.upstream_error,
            duration_ms: self.duration_us as f64 / 1000.0,
            generation: self.generation,
            seq: self.seq,
        }
    }

    fn matches(&self, f: &Filter) -> bool {
        if let Some(class) = f.status_class {
            if self.status / 100 != class {
                return false;
            }
        }
        if f.status.is_some_and(|s| s != self.status) {
            return false;
        }
        if let Some(i) = &f.instance {
            if !(self.has_instance && self.instance == i.as_bytes()) {
                return false;
            }
        }
        if let Some(r) = &f.route {
            if !(self.has_route && self.route == r.as_bytes()) {
                return false;
            }
        }
        if f.error.is_some() && f.error != self.error {
            return false;
        }
        true
    }
}

/// One request as the admin API shows it (SPEC §12).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// `null` for a request that got no id (a chain without `request_id`).
    pub request_id: Option<String>,
    pub time: String,
    pub entry: &'static str,
    pub method: String,
    pub host: Option<String>,
    pub path: String,
    pub route: Option<String>,
    pub instance: Option<String>,
    pub client_ip: Option<String>,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub upstream_timecost_ms: Option<u64>,
    pub error: Option<&'static str>,
    pub upstream_error: Option<&'static str>,
    pub duration_ms: f64,
    pub generation: u64,
    #[serde(skip)]
    pub seq: u64,
}

/// Which records a listing wants; every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `5xx` is 5.
    pub status_class: Option<u16>,
    pub status: Option<u16>,
    pub instance: Option<String>,
    pub route: Option<String>,
    pub error: Option<ErrorCode>,
}

/// The ring.
pub struct Recent {
    slots: Box<[Mutex<Slot>]>,
    next: AtomicU64,
}

impl Recent {
    /// A ring of `capacity` slots (0: nothing is kept).
    pub fn new(capacity: usize) -> Recent {
        Recent {
            slots: (0..capacity).map(|_| Mutex::new(Slot::default())).collect(),
            next: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many requests were recorded since start (evicted ones included).
    pub fn recorded(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Keeps one request, replacing the oldest.
    pub fn record(&self, f: &Fields) {
        let n = self.slots.len() as u64;
        if n == 0 {
            return;
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        // A poisoned slot (a panic while copying, which nothing here can cause) is reused.
        let mut slot = self.slots[(seq % n) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Two writers a full lap apart on one slot: the newer record wins.
        if slot.seq <= seq {
            slot.write(seq, f);
        }
    }

    fn each(&self, mut f: impl FnMut(&Slot)) {
        for s in self.slots.iter() {
            let slot = s.lock().unwrap_or_else(|e| e.into_inner());
            if slot.seq != 0 {
                f(&slot);
            }
        }
    }

    /// The record of request `id`, if it is still in the ring.
    pub fn find(&self, id: &str) -> Option<Record> {
        let mut found: Option<Record> = None;
        if id.is_empty() {
            return None;
        }
        self.each(|s| {
            if s.id() == id.as_bytes() && found.as_ref().is_none_or(|f| f.seq < s.seq) {
                found = Some(s.view());
            }
        });
        found
    }

    /// The `limit` records that match and started last, newest first.
    pub fn list(&self, filter: &Filter, limit: usize) -> Vec<Record> {
        let mut hits: Vec<(u64, u64, usize)> = Vec::new();
        let mut out: Vec<Record> = Vec::new();
        // First pass: which slots match; second: copy out only the newest. Newest by start
        // time: requests are recorded when they end, which is not the order they came in.
        for (i, s) in self.slots.iter().enumerate() {
            let slot = s.lock().unwrap_or_else(|e| e.into_inner());
            if slot.seq != 0 && slot.matches(filter) {
                hits.push((slot.start_us, slot.seq, i));
            }
        }
        hits.sort_unstable_by_key(|h| std::cmp::Reverse((h.0, h.1)));
        for (_, seq, i) in hits.into_iter().take(limit) {
            let slot = self.slots[i].lock().unwrap_or_else(|e| e.into_inner());
            // Overwritten since the first pass: the new record may not match; skip it.
            if slot.seq == seq {
                out.push(slot.view());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(id: &str, status: u16, instance: Option<&'static str>) -> Fields<'static> {
        Fields {
            request_id: Box::leak(id.to_string().into_boxed_str()).as_bytes(),
            start_us: 1_700_000_000_123_000,
            entry: Entry::Http,
            method: b"GET",
            host: Some(b"h.example.com"),
            path: b"/api/x",
            route: instance.map(|_| "default/api"),
            instance,
            client_ip: Some("10.0.0.7".parse().unwrap()),
            status,
            upstream_status: instance.map(|_| status),
            upstream_timecost_ms: instance.map(|_| 3),
            error: None,
            upstream_error: None,
            duration_us: 4_567,
            generation: 1,
        }
    }

    #[test]
    fn finds_records_until_they_are_evicted() {
        let r = Recent::new(3);
        for i in 0..3 {
            r.record(&fields(&format!("id-{i}"), 200, Some("a")));
        }
        let rec = r.find("id-0").expect("still there");
        assert_eq!(rec.time, "2023-11-14T22:13:20.123Z");
        assert_eq!(rec.duration_ms, 4.567);
        assert_eq!(rec.route.as_deref(), Some("default/api"));
        r.record(&fields("id-3", 502, None));
        assert!(r.find("id-0").is_none(), "evicted by the fourth");
        let last = r.find("id-3").unwrap();
        assert_eq!((last.route, last.instance, last.status), (None, None, 502));
        assert_eq!(r.recorded(), 4);
    }

    #[test]
    fn a_slot_reused_for_a_shorter_value_shows_only_that_value() {
        let r = Recent::new(1);
        let mut f = fields("a", 200, Some("a-long-instance-name"));
        f.host = None;
        r.record(&fields("first", 200, Some("a-long-instance-name")));
        r.record(&f);
        let rec = r.find("a").unwrap();
        assert_eq!(rec.host, None);
        assert_eq!(rec.instance.as_deref(), Some("a-long-instance-name"));
    }

    #[test]
    fn lists_the_newest_matches_first() {
        let r = Recent::new(10);
        r.record(&fields("1", 200, Some("a")));
        r.record(&fields("2", 502, Some("a")));
        r.record(&fields("3", 503, Some("b")));
        r.record(&fields("4", 504, Some("a")));
        let five = Filter {
            status_class: Some(5),
            ..Filter::default()
        };
        let ids = |v: Vec<Record>| {
            v.into_iter()
                .map(|r| r.request_id.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(r.list(&five, 10)), ["4", "3", "2"]);
        assert_eq!(ids(r.list(&five, 2)), ["4", "3"]);
        let a5 = Filter {
            instance: Some("a".into()),
            ..five.clone()
        };
        assert_eq!(ids(r.list(&a5, 10)), ["4", "2"]);
        let exact = Filter {
            status: Some(503),
            ..Filter::default()
        };
        assert_eq!(ids(r.list(&exact, 10)), ["3"]);
    }

    #[test]
    fn listings_follow_start_times_not_the_order_requests_ended() {
        let r = Recent::new(10);
        let at = |id: &str, start_us: u64| Fields {
            start_us,
            ..fields(id, 200, None)
        };
        r.record(&at("slow-first", 100));
        r.record(&at("third", 300));
        r.record(&at("second", 200));
        let ids: Vec<_> = r
            .list(&Filter::default(), 10)
            .into_iter()
            .map(|r| r.request_id.unwrap())
            .collect();
        assert_eq!(ids, ["third", "second", "slow-first"]);
    }

    #[test]
    fn long_values_are_cut() {
        let r = Recent::new(1);
        let long = vec![b'a'; 5000];
        let mut f = fields("x", 200, None);
        f.path = Box::leak(long.into_boxed_slice());
        r.record(&f);
        assert_eq!(r.find("x").unwrap().path.len(), MAX_PATH);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let r = Recent::new(0);
        r.record(&fields("x", 200, None));
        assert!(r.find("x").is_none());
        assert!(r.list(&Filter::default(), 10).is_empty());
    }
}
