//! The recent-request buffer (SPEC §12 `admin.recent_requests`): a fixed ring of slots, each
//! behind its own small lock. A request takes the next slot with one atomic add and copies its
//! facts into the slot, texts included (only a record with unusually long texts puts them in a
//! buffer of the slot's own, made once and kept); an admin lookup scans the ring slot by slot.
//! Lives as long as the process (reloads keep it), and is lost on restart: the access log is
//! the durable record.

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

/// Where a slot keeps a record's texts: id, method, host, path, route, instance, in this order.
const ID: usize = 0;
const METHOD: usize = 1;
const HOST: usize = 2;
const PATH: usize = 3;
const ROUTE: usize = 4;
const INSTANCE: usize = 5;
const PARTS: usize = 6;
/// The length of a text that is not there (a request without `Host`, not routed).
const ABSENT: u16 = u16::MAX;
/// Bytes of text a slot holds in itself: a request id, a method, a 40-byte host, a 60-byte
/// path, a route and an instance id fit. A record with longer texts keeps them in the slot's
/// `spill` buffer, made the first time and kept.
const INLINE: usize = 216;

/// One record, in one stretch of memory (six cache lines, see `Cell`): the ring is written
/// slot after slot, and a record touches only the lines it fills. Slots that kept their texts
/// in buffers of their own touched four more lines per record, each somewhere else.
struct Slot {
    /// 0: never written; else the record's sequence number + 1.
    seq: u64,
    start_us: u64,
    duration_us: u64,
    generation: u64,
    upstream_timecost_ms: Option<u64>,
    upstream_error: Option<&'static str>,
    client_ip: Option<IpAddr>,
    status: u16,
    upstream_status: Option<u16>,
    error: Option<ErrorCode>,
    entry: Entry,
    /// Each text's length (`ABSENT` when there is none); they follow one another in `inline`,
    /// or in `spill` when `spilled`.
    lens: [u16; PARTS],
    spilled: bool,
    spill: Vec<u8>,
    inline: [u8; INLINE],
}

/// A slot behind its lock, on cache lines of its own.
#[repr(align(64))]
struct Cell(Mutex<Slot>);

impl Default for Slot {
    fn default() -> Self {
        Slot {
            seq: 0,
            start_us: 0,
            duration_us: 0,
            generation: 0,
            upstream_timecost_ms: None,
            upstream_error: None,
            client_ip: None,
            status: 0,
            upstream_status: None,
            error: None,
            entry: Entry::None,
            lens: [0; PARTS],
            spilled: false,
            spill: Vec::new(),
            inline: [0; INLINE],
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `s` cut to `max` bytes.
fn cut(s: &[u8], max: usize) -> &[u8] {
    &s[..s.len().min(max)]
}

impl Slot {
    fn write(&mut self, seq: u64, f: &Fields) {
        self.seq = seq + 1;
        self.start_us = f.start_us;
        self.duration_us = f.duration_us;
        self.generation = f.generation;
        self.upstream_timecost_ms = f.upstream_timecost_ms;
        self.upstream_error = f.upstream_error;
        self.client_ip = f.client_ip;
        self.status = f.status;
        self.upstream_status = f.upstream_status;
        self.error = f.error;
        self.entry = f.entry;
        let parts: [Option<&[u8]>; PARTS] = [
            Some(cut(f.request_id, ID_LEN)),
            Some(cut(f.method, MAX_METHOD)),
            f.host.map(|h| cut(h, MAX_HOST)),
            Some(cut(f.path, MAX_PATH)),
            f.route.map(|r| cut(r.as_bytes(), MAX_ROUTE)),
            f.instance.map(|i| cut(i.as_bytes(), MAX_INSTANCE)),
        ];
        let mut total = 0;
        for (len, part) in self.lens.iter_mut().zip(&parts) {
            // Every part is cut to at most `MAX_PATH` bytes, well under `ABSENT`.
            *len = part.map_or(ABSENT, |p| p.len() as u16);
            total += part.map_or(0, <[u8]>::len);
        }
        self.spilled = total > INLINE;
        if self.spilled {
            self.spill.clear();
            for part in parts.iter().flatten() {
                self.spill.extend_from_slice(part);
            }
        } else {
            let mut rest = &mut self.inline[..total];
            for part in parts.iter().flatten() {
                let (head, tail) = rest.split_at_mut(part.len());
                head.copy_from_slice(part);
                rest = tail;
            }
        }
    }

    /// Text `i` of the record (`ID`, `METHOD`...), `None` when absent.
    fn part(&self, i: usize) -> Option<&[u8]> {
        let len = self.lens[i];
        if len == ABSENT {
            return None;
        }
        let start: usize = self.lens[..i]
            .iter()
            .filter(|&&l| l != ABSENT)
            .map(|&l| usize::from(l))
            .sum();
        let texts: &[u8] = if self.spilled {
            &self.spill
        } else {
            &self.inline
        };
        texts.get(start..start + usize::from(len))
    }

    fn id(&self) -> &[u8] {
        self.part(ID).unwrap_or_default()
    }

    fn view(&self) -> Record {
        let id = self.id();
        Record {
            request_id: (!id.is_empty()).then(|| text(id)),
            time: anygate_plugins::access_log::rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(self.start_us),
            ),
            entry: self.entry.label(),
            method: text(self.part(METHOD).unwrap_or_default()),
            host: self.part(HOST).map(text),
            path: text(self.part(PATH).unwrap_or_default()),
            route: self.part(ROUTE).map(text),
            instance: self.part(INSTANCE).map(text),
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
            if self.part(INSTANCE) != Some(i.as_bytes()) {
                return false;
            }
        }
        if let Some(r) = &f.route {
            if self.part(ROUTE) != Some(r.as_bytes()) {
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
    slots: Box<[Cell]>,
    /// The next record's sequence number: slots taken so far.
    next: AtomicU64,
    /// Records written so far. Counted after the write, so that a count that includes a
    /// request also means its record can be found (`next` runs ahead of the writes).
    written: AtomicU64,
}

impl Recent {
    /// A ring of `capacity` slots (0: nothing is kept).
    pub fn new(capacity: usize) -> Recent {
        Recent {
            slots: (0..capacity)
                .map(|_| Cell(Mutex::new(Slot::default())))
                .collect(),
            next: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many requests were recorded since start (evicted ones included).
    pub fn recorded(&self) -> u64 {
        self.written.load(Ordering::Acquire)
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
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Two writers a full lap apart on one slot: the newer record wins.
        if slot.seq <= seq {
            slot.write(seq, f);
        }
        drop(slot);
        self.written.fetch_add(1, Ordering::Release);
    }

    fn each(&self, mut f: impl FnMut(&Slot)) {
        for s in self.slots.iter() {
            let slot = s.0.lock().unwrap_or_else(|e| e.into_inner());
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
            let slot = s.0.lock().unwrap_or_else(|e| e.into_inner());
            if slot.seq != 0 && slot.matches(filter) {
                hits.push((slot.start_us, slot.seq, i));
            }
        }
        hits.sort_unstable_by_key(|h| std::cmp::Reverse((h.0, h.1)));
        for (_, seq, i) in hits.into_iter().take(limit) {
            let slot = self.slots[i].0.lock().unwrap_or_else(|e| e.into_inner());
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
    fn a_slot_is_six_cache_lines() {
        assert_eq!(std::mem::size_of::<Cell>(), 6 * 64);
        assert_eq!(std::mem::align_of::<Cell>(), 64);
    }

    #[test]
    fn long_texts_spill_and_a_later_short_record_reads_right() {
        let r = Recent::new(1);
        let host = "h".repeat(200);
        let mut f = fields("long", 200, Some("inst"));
        f.host = Some(Box::leak(host.clone().into_boxed_str()).as_bytes());
        r.record(&f);
        let rec = r.find("long").unwrap();
        assert_eq!(rec.host.as_deref(), Some(host.as_str()));
        assert_eq!((rec.method.as_str(), rec.path.as_str()), ("GET", "/api/x"));
        assert_eq!(rec.route.as_deref(), Some("default/api"));
        assert_eq!(rec.instance.as_deref(), Some("inst"));
        r.record(&fields("short", 404, None));
        let rec = r.find("short").unwrap();
        assert_eq!(rec.host.as_deref(), Some("h.example.com"));
        assert_eq!((rec.route, rec.instance), (None, None));
        assert!(r.find("long").is_none());
    }

    #[test]
    fn texts_that_just_fit_stay_in_the_slot() {
        let r = Recent::new(1);
        let f = fields("fit", 200, Some("i"));
        let others = 3 + "h.example.com".len() + "default/api".len() + 1 + 3;
        let path = format!("/{}", "p".repeat(INLINE - others - 1));
        let f = Fields {
            path: Box::leak(path.clone().into_boxed_str()).as_bytes(),
            ..f
        };
        r.record(&f);
        let slot = r.slots[0].0.lock().unwrap();
        assert!(!slot.spilled);
        drop(slot);
        assert_eq!(r.find("fit").unwrap().path, path);
        let one_more = Fields {
            path: Box::leak(format!("{path}q").into_boxed_str()).as_bytes(),
            ..f
        };
        r.record(&one_more);
        assert!(r.slots[0].0.lock().unwrap().spilled);
        assert_eq!(r.find("fit").unwrap().path, format!("{path}q"));
    }

    #[test]
    fn an_empty_host_is_not_a_missing_one() {
        let r = Recent::new(1);
        let mut f = fields("e", 200, None);
        f.host = Some(b"");
        r.record(&f);
        assert_eq!(r.find("e").unwrap().host.as_deref(), Some(""));
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let r = Recent::new(0);
        r.record(&fields("x", 200, None));
        assert!(r.find("x").is_none());
        assert!(r.list(&Filter::default(), 10).is_empty());
    }
}
