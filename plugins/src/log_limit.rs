//! Repeated log lines, bounded: of the lines of one kind (an upstream failing, clients hanging
//! up, Pingora's per-connection errors), one is written per interval and the others are
//! counted; the count is written with the next line of that kind, or by a background flush
//! once the interval is over: `... (and 1234 more like it in the last 10s)`. So a client, or an
//! outage, cannot turn request volume into log volume; each request's detail stays in the
//! access log.
//!
//! Lock-free on the request path: a kind is a slot in a fixed table found by its hash, and
//! deciding costs a few atomic operations. The table is bounded; kinds beyond it share one
//! overflow slot.

use log::Level;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One line per kind per interval.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Distinct kinds tracked (then the overflow slot).
const SLOTS: usize = 256;
const EMPTY: u64 = 0;
const OVERFLOW: u64 = u64::MAX;

/// What to do with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Write it, followed by [`More`] for the lines suppressed before it.
    Write(More),
    /// Count it and write nothing.
    Suppress,
}

/// Lines of the same kind that were suppressed, written as ` (and N more like it in the last
/// 10s)` (nothing when there were none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct More(pub u64);

impl fmt::Display for More {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > 0 {
            write!(
                f,
                " (and {} more like it in the last {}s)",
                self.0,
                INTERVAL.as_secs()
            )?;
        }
        Ok(())
    }
}

struct Slot {
    key: AtomicU64,
    /// Milliseconds since the limiter's epoch when the current window opened, plus one (0:
    /// never opened).
    window: AtomicU64,
    suppressed: AtomicU64,
    /// How the flush names the kind, and the level and target it writes at.
    label: OnceLock<(Level, &'static str, String)>,
}

/// A table of kinds with their windows and counts.
pub struct Limiter {
    epoch: Instant,
    interval_ms: u64,
    slots: Box<[Slot]>,
    overflow: Slot,
}

fn slot() -> Slot {
    Slot {
        key: AtomicU64::new(EMPTY),
        window: AtomicU64::new(0),
        suppressed: AtomicU64::new(0),
        label: OnceLock::new(),
    }
}

impl Limiter {
    pub fn new(interval: Duration) -> Limiter {
        Limiter {
            epoch: Instant::now(),
            interval_ms: interval.as_millis().max(1) as u64,
            slots: (0..SLOTS).map(|_| slot()).collect(),
            overflow: slot(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// The slot of `key`, claiming a free one the first time; `label` names it in flushes.
    fn find(&self, key: u64, label: impl FnOnce() -> (Level, &'static str, String)) -> &Slot {
        let key = if matches!(key, EMPTY | OVERFLOW) {
            1
        } else {
            key
        };
        let start = (key % SLOTS as u64) as usize;
        for i in 0..SLOTS {
            let s = &self.slots[(start + i) % SLOTS];
            match s.key.load(Ordering::Acquire) {
                k if k == key => return s,
                EMPTY => {
                    match s
                        .key
                        .compare_exchange(EMPTY, key, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => {
                            let _ = s.label.set(label());
                            return s;
                        }
                        Err(k) if k == key => return s,
                        Err(_) => {}
                    }
                }
                _ => {}
            }
        }
        let _ = self
            .overflow
            .label
            .set((Level::Warn, "anygate", "other repeated lines".into()));
        &self.overflow
    }

    /// Decides about one line of kind `key` (`label` makes its name, once per kind).
    pub fn admit(&self, key: u64, label: impl FnOnce() -> (Level, &'static str, String)) -> Admit {
        let s = self.find(key, label);
        let now = self.now_ms();
        let opened = s.window.load(Ordering::Acquire);
        let expired = opened == 0 || now.saturating_sub(opened) >= self.interval_ms;
        // Whoever swaps the window open writes; the others count.
        if expired
            && s.window
                .compare_exchange(opened, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Admit::Write(More(s.suppressed.swap(0, Ordering::AcqRel)));
        }
        s.suppressed.fetch_add(1, Ordering::AcqRel);
        Admit::Suppress
    }

    /// Takes the counts of kinds whose window is over: `(level, target, label, count)` for
    /// each that suppressed lines. Windows stay as they are.
    pub fn take_expired(&self) -> Vec<(Level, &'static str, &str, u64)> {
        let now = self.now_ms();
        let mut out = Vec::new();
        for s in self.slots.iter().chain(std::iter::once(&self.overflow)) {
            if s.suppressed.load(Ordering::Acquire) == 0 {
                continue;
            }
            let opened = s.window.load(Ordering::Acquire);
            if now.saturating_sub(opened) < self.interval_ms {
                continue;
            }
            let n = s.suppressed.swap(0, Ordering::AcqRel);
            if n > 0 {
                let (level, target, label) = match s.label.get() {
                    Some((l, t, s)) => (*l, *t, s.as_str()),
                    None => (Level::Warn, "anygate", "repeated lines"),
                };
                out.push((level, target, label, n));
            }
        }
        out
    }
}

/// A 64-bit FNV-1a hash of some parts, for kind keys.
pub fn key(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(b"\xff") {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The process's limiter; its flush thread starts with the first suppressed line (so after
/// Pingora daemonizes: a thread does not survive `fork`).
pub fn global() -> &'static Limiter {
    static L: OnceLock<Limiter> = OnceLock::new();
    L.get_or_init(|| Limiter::new(INTERVAL))
}

static FLUSHER: AtomicUsize = AtomicUsize::new(0);

/// Writes the suppressed counts of every kind whose window is over.
pub fn flush(limiter: &Limiter) {
    for (level, target, label, n) in limiter.take_expired() {
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(target)
                .args(format_args!(
                    "... and {n} more like it in the last {}s ({label})",
                    INTERVAL.as_secs()
                ))
                .build(),
        );
    }
}

fn start_flusher() {
    if FLUSHER
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("log-limit".into())
        .spawn(|| loop {
            std::thread::sleep(INTERVAL / 2);
            flush(global());
        });
    if spawned.is_err() {
        FLUSHER.store(0, Ordering::Release);
    }
}

/// [`Limiter::admit`] on the process's limiter (starting its flush thread when needed).
pub fn admit(key: u64, label: impl FnOnce() -> (Level, &'static str, String)) -> Admit {
    let a = global().admit(key, label);
    if a == Admit::Suppress && FLUSHER.load(Ordering::Acquire) == 0 {
        start_flusher();
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label() -> (Level, &'static str, String) {
        (Level::Error, "t", "kind".into())
    }

    #[test]
    fn one_line_per_window_and_every_other_counted() {
        let l = Limiter::new(Duration::from_millis(50));
        assert_eq!(l.admit(7, label), Admit::Write(More(0)));
        for _ in 0..99 {
            assert_eq!(l.admit(7, label), Admit::Suppress);
        }
        // Another kind has its own window.
        assert_eq!(l.admit(8, label), Admit::Write(More(0)));
        std::thread::sleep(Duration::from_millis(60));
        // The next line carries the count of the window before it.
        assert_eq!(l.admit(7, label), Admit::Write(More(99)));
        assert_eq!(l.admit(7, label), Admit::Suppress);
        assert!(l.take_expired().is_empty(), "the new window is still open");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.take_expired(), vec![(Level::Error, "t", "kind", 1)]);
        assert!(l.take_expired().is_empty(), "taken once");
    }

    #[test]
    fn counts_are_exact_under_contention() {
        let l = std::sync::Arc::new(Limiter::new(Duration::from_secs(3600)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut written = 0u64;
                    for i in 0..10_000u64 {
                        if let Admit::Write(_) = l.admit(i % 3 + 1, label) {
                            written += 1;
                        }
                    }
                    written
                })
            })
            .collect();
        let written: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(written, 3, "one line per kind");
        let suppressed: u64 = l
            .slots
            .iter()
            .map(|s| s.suppressed.load(Ordering::Relaxed))
            .sum();
        assert_eq!(written + suppressed, 40_000);
    }

    #[test]
    fn a_full_table_shares_the_overflow_slot() {
        let l = Limiter::new(Duration::from_secs(3600));
        for k in 1..=SLOTS as u64 {
            assert_eq!(l.admit(k * 7919, label), Admit::Write(More(0)));
        }
        assert_eq!(l.admit(u64::MAX - 5, label), Admit::Write(More(0)));
        assert_eq!(l.admit(u64::MAX - 6, label), Admit::Suppress);
        // Keys 0 and MAX are ordinary kinds too.
        assert!(matches!(
            l.admit(0, label),
            Admit::Suppress | Admit::Write(_)
        ));
    }

    #[test]
    fn the_count_reads_as_a_suffix() {
        assert_eq!(More(0).to_string(), "");
        assert_eq!(
            More(1234).to_string(),
            " (and 1234 more like it in the last 10s)"
        );
        assert_ne!(key(&[b"a", b"bc"]), key(&[b"ab", b"c"]));
    }
}
