// anygate patch: idle upstream connections kept by the worker thread that released them.
//
// Pingora's pool (`pingora_pool::ConnectionPool`) is shared by every thread: releasing a
// connection wrapped it in an `Arc<Mutex<_>>`, put it into a `DashMap` and an LRU, and spawned
// a task (on a worker picked at random) that watched it while idle; taking it back woke that
// task, waited for its lock and unwrapped the `Arc`. About 5,000 instructions per proxied
// request, and a connection could be thrown away when the watcher ran on another thread.
//
// A worker thread runs its requests to the end on its own runtime, so it can keep the
// connections it releases to itself, as an nginx worker does: a thread-local list per
// (connector, peer), the most recently released last. Taking one pops the newest that has not
// expired and still reads as idle (`test_reusable_stream`: not closed, no unexpected bytes).
// One task per thread, alive while the thread keeps anything, wakes every `SWEEP_EVERY` and
// closes what expired or what the peer closed; so a connection closes at most that much
// after its idle timeout, and a connection the peer closed is closed within that time (or
// when it is next taken, whichever is first).

use super::{test_reusable_stream, Stream};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
// tokio's clock (std's outside tokio's test utilities).

/// How often a thread looks over the connections it keeps.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Idle {
    stream: Stream,
    /// When its idle timeout ends, if it has one.
    /// On the coarse monotonic clock (`pingora_timeout::coarse`).
    expires: Option<Duration>,
    /// The connector's count of pooled connections found holding unexpected data.
    unexpected: Arc<AtomicU64>,
}

impl Idle {
    /// Whether it can still be used at `now`.
    fn usable(&mut self, now: Duration) -> bool {
        self.expires.is_none_or(|at| now < at)
            && test_reusable_stream(&mut self.stream, &self.unexpected)
    }
}

/// Keys are (connector id, peer reuse hash): already hashes or counters, not client input.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Key = (u64, u64);

#[derive(Default)]
struct Stash {
    /// Oldest first: `put` pushes at the back, `take` pops there, the cap evicts at the front.
    idle: HashMap<Key, VecDeque<Idle>, BuildHasherDefault<KeyHasher>>,
    /// Connections kept, over all keys.
    count: usize,
    /// This thread's sweeping task, while it runs (it ends when nothing is kept, or with its
    /// runtime).
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

thread_local! {
    static STASH: RefCell<Stash> = RefCell::new(Stash::default());
}

/// Keeps `stream` for reuse by this thread. It is dropped (closed) instead when this thread
/// already keeps `cap` connections and none to this peer to make room with, or when the thread
/// has no runtime to sweep with.
pub(super) fn put(
    key: Key,
    stream: Stream,
    idle_timeout: Option<Duration>,
    cap: usize,
    unexpected: &Arc<AtomicU64>,
) {
    if cap == 0 {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let idle = Idle {
        stream,
        // The coarse clock: an idle timeout of seconds does not need better than a tick.
        expires: idle_timeout.map(|t| pingora_timeout::coarse::now() + t),
        unexpected: unexpected.clone(),
    };
    STASH.with(|stash| {
        let Ok(mut stash) = stash.try_borrow_mut() else {
            return;
        };
        let stash = &mut *stash;
        let mut evicted = None;
        if stash.count >= cap {
            // The oldest to this peer makes room, if there is one.
            let Some(oldest) = stash.idle.get_mut(&key).and_then(VecDeque::pop_front) else {
                return;
            };
            evicted = Some(oldest);
            stash.count -= 1;
        }
        stash.idle.entry(key).or_default().push_back(idle);
        stash.count += 1;
        if stash.sweeper.as_ref().is_none_or(|s| s.is_finished()) {
            stash.sweeper = Some(runtime.spawn(sweep()));
        }
        drop(evicted);
    })
}

/// The newest usable connection this thread keeps for `key`; the unusable ones found on the
/// way are closed.
pub(super) fn take(key: Key) -> Option<Stream> {
    let mut closed = Vec::new();
    let found = STASH.with(|stash| {
        let mut stash = stash.try_borrow_mut().ok()?;
        let stash = &mut *stash;
        let list = stash.idle.get_mut(&key)?;
        let mut now = None;
        let mut found = None;
        while let Some(mut idle) = list.pop_back() {
            stash.count -= 1;
            let now = *now.get_or_insert_with(pingora_timeout::coarse::now);
            if idle.usable(now) {
                found = Some(idle.stream);
                break;
            }
            closed.push(idle);
        }
        if list.is_empty() {
            stash.idle.remove(&key);
        }
        found
    });
    drop(closed);
    found
}

/// Every `SWEEP_EVERY` while the thread keeps connections: closes the expired and the closed.
async fn sweep() {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let (done, closed) = STASH.with(|stash| {
            let Ok(mut stash) = stash.try_borrow_mut() else {
                return (false, Vec::new());
            };
            let stash = &mut *stash;
            let now = pingora_timeout::coarse::now();
            let mut closed = Vec::new();
            stash.idle.retain(|_, list| {
                // In one pass, keeping the order (oldest first).
                for mut idle in std::mem::take(list) {
                    if idle.usable(now) {
                        list.push_back(idle);
                    } else {
                        closed.push(idle);
                    }
                }
                !list.is_empty()
            });
            stash.count -= closed.len();
            // With nothing kept the task ends; the next `put` starts another.
            (stash.count == 0, closed)
        });
        drop(closed);
        if done {
            return;
        }
    }
}
