//! The keep-alive wait's deadline: a table per worker thread, swept every 100 ms, instead of a
//! timer per wait.
//!
//! A keep-alive wait starts after every response and nearly always ends with the next request,
//! long before its deadline. A timer per wait (Pingora's coarse timer: a clock read, a lock, a
//! tree lookup, a `Notify` and a boxed future) cost about 1,600 instructions per request. A
//! slot in this table costs less than half that: no clock read (deadlines are counted in
//! sweeps), one uncontended lock to take the slot and one to give it back, a slot reused from
//! a free list. The sweep wakes the waits whose deadline has passed, so a deadline is met to
//! within one sweep, never early.
//!
//! The sweeper also watches the server's shutdown: when it comes, every wait ends at once (the
//! connection closes, as it would at its deadline) and a wait that starts later ends on its
//! first poll. A wait that selected on the shutdown watch itself built, polled and dropped a
//! `changed()` future per request.

use pingora_core::server::ShutdownWatch;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::MissedTickBehavior;

/// How often a thread's table is swept: the precision of the keep-alive timeout.
const SWEEP: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Table {
    /// Sweeps done so far: the clock deadlines are counted in.
    tick: u64,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Whether a sweeper task is running for this table (it stops with its runtime).
    swept: bool,
    /// The server is shutting down: every wait ends now.
    down: bool,
}

struct Slot {
    deadline: u64,
    waker: Option<Waker>,
    expired: bool,
}

type Shared = Arc<Mutex<Table>>;

fn lock(t: &Mutex<Table>) -> MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    static LOCAL: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// This thread's table.
fn local_table() -> Shared {
    LOCAL.with(|l| l.borrow_mut().get_or_insert_with(Shared::default).clone())
}

/// Starts a sweeper for `t` unless one runs (the caller holds `t`'s lock as `g`).
fn ensure_swept(t: &Shared, g: &mut Table, shutdown: &ShutdownWatch) {
    if !g.swept {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            g.swept = true;
            g.down = *shutdown.borrow();
            rt.spawn(sweep(Arc::downgrade(t), shutdown.clone()));
        }
    }
}

/// Marks the table unswept when the sweeper stops (its runtime shut down), so that the next
/// wait on this thread starts another.
struct Sweeping(Weak<Mutex<Table>>);

impl Drop for Sweeping {
    fn drop(&mut self) {
        if let Some(t) = self.0.upgrade() {
            lock(&t).swept = false;
        }
    }
}

async fn sweep(table: Weak<Mutex<Table>>, mut shutdown: ShutdownWatch) {
    let _sweeping = Sweeping(table.clone());
    let mut every = tokio::time::interval(SWEEP);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Until the shutdown came, or its sender is gone (no shutdown will come).
    let mut watching = true;
    loop {
        let ticked = tokio::select! {
            _ = every.tick() => true,
            changed = shutdown.changed(), if watching => {
                watching = changed.is_ok();
                false
            }
        };
        let Some(t) = table.upgrade() else { return };
        let mut g = lock(&t);
        if ticked {
            g.tick += 1;
        }
        if *shutdown.borrow() {
            g.down = true;
            watching = false;
        }
        let (now, down) = (g.tick, g.down);
        for s in g.slots.iter_mut() {
            if !s.expired && (down || s.deadline <= now) {
                if let Some(w) = s.waker.take() {
                    s.expired = true;
                    w.wake();
                }
            }
        }
    }
}

/// A future that is ready once `idle` has passed since its first poll (to within one sweep),
/// or once the server shuts down. Nothing is registered until it is polled, so a wait whose
/// data is already there costs nothing.
pub struct IdleDeadline<'a> {
    sweeps: u64,
    slot: Option<(Shared, usize)>,
    /// Handed to this thread's sweeper if none runs yet.
    shutdown: &'a ShutdownWatch,
}

impl<'a> IdleDeadline<'a> {
    pub fn new(idle: Duration, shutdown: &'a ShutdownWatch) -> IdleDeadline<'a> {
        // One sweep more than the timeout holds: the next sweep may be due at once.
        let sweeps = idle.as_nanos().div_ceil(SWEEP.as_nanos()) + 1;
        IdleDeadline {
            sweeps: u64::try_from(sweeps).unwrap_or(u64::MAX),
            slot: None,
            shutdown,
        }
    }
}

impl Future for IdleDeadline<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Some((t, i)) = &this.slot {
            let mut g = lock(t);
            let s = &mut g.slots[*i];
            if s.expired {
                return Poll::Ready(());
            }
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let t = local_table();
        let mut g = lock(&t);
        ensure_swept(&t, &mut g, this.shutdown);
        if g.down {
            return Poll::Ready(());
        }
        let slot = Slot {
            deadline: g.tick.saturating_add(this.sweeps),
            waker: Some(cx.waker().clone()),
            expired: false,
        };
        let i = match g.free.pop() {
            Some(i) => {
                g.slots[i] = slot;
                i
            }
            None => {
                g.slots.push(slot);
                g.slots.len() - 1
            }
        };
        drop(g);
        this.slot = Some((t, i));
        Poll::Pending
    }
}

impl Drop for IdleDeadline<'_> {
    fn drop(&mut self) {
        if let Some((t, i)) = self.slot.take() {
            let mut g = lock(&t);
            let s = &mut g.slots[i];
            s.waker = None;
            s.expired = true;
            g.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A shutdown watch that stays quiet while its sender lives.
    fn no_shutdown() -> (tokio::sync::watch::Sender<bool>, ShutdownWatch) {
        tokio::sync::watch::channel(false)
    }

    fn poll_once(d: &mut IdleDeadline) -> Poll<()> {
        Pin::new(d).poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_wait_ends_after_its_timeout_and_not_before() {
        let (_tx, never) = no_shutdown();
        runtime().block_on(async {
            for ms in [150u64, 420] {
                let started = Instant::now();
                IdleDeadline::new(Duration::from_millis(ms), &never).await;
                let took = started.elapsed();
                assert!(took >= Duration::from_millis(ms), "{ms} ms took {took:?}");
                assert!(took < Duration::from_secs(5), "{ms}: {took:?}");
            }
        });
    }

    #[test]
    fn slots_are_reused_and_dropped_waits_never_fire() {
        let (_tx, never) = no_shutdown();
        runtime().block_on(async {
            // A thousand waits that end early (the next request came) leave no slot behind.
            for _ in 0..1000 {
                let mut d = IdleDeadline::new(Duration::from_secs(60), &never);
                assert!(poll_once(&mut d).is_pending());
            }
            let (slots, free) = {
                let t = local_table();
                let g = lock(&t);
                (g.slots.len(), g.free.len())
            };
            assert!(slots <= 2, "{slots} slots");
            assert_eq!(free, slots);
            // Many at once, each with its own timeout: the short ones end, the long ones wait.
            let short: Vec<_> = (0..50)
                .map(|_| {
                    let mut d = IdleDeadline::new(Duration::from_millis(100), &never);
                    assert!(poll_once(&mut d).is_pending());
                    d
                })
                .collect();
            let mut long = IdleDeadline::new(Duration::from_secs(60), &never);
            assert!(poll_once(&mut long).is_pending());
            let started = Instant::now();
            for d in short {
                d.await;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                started.elapsed()
            );
            assert!(tokio::time::timeout(SWEEP * 3, &mut long).await.is_err());
        });
    }

    #[test]
    fn a_new_runtime_on_the_same_thread_gets_a_new_sweeper() {
        let (_tx, never) = no_shutdown();
        for _ in 0..3 {
            runtime().block_on(async {
                IdleDeadline::new(Duration::from_millis(50), &never).await;
            });
        }
    }

    #[test]
    fn a_shutdown_ends_every_wait_and_later_ones_at_once() {
        let (tx, shutdown) = tokio::sync::watch::channel(false);
        runtime().block_on(async {
            let waits: Vec<_> = (0..20)
                .map(|_| {
                    let mut d = IdleDeadline::new(Duration::from_secs(600), &shutdown);
                    assert!(poll_once(&mut d).is_pending());
                    d
                })
                .collect();
            // Still waiting a few sweeps later.
            let mut first = IdleDeadline::new(Duration::from_secs(600), &shutdown);
            assert!(tokio::time::timeout(SWEEP * 3, &mut first).await.is_err());
            tx.send(true).unwrap();
            // Each ends long before its 600 s (the bound only keeps a broken sweeper from
            // hanging the test).
            for d in waits {
                tokio::time::timeout(Duration::from_secs(30), d)
                    .await
                    .expect("a wait outlived the shutdown");
            }
            tokio::time::timeout(Duration::from_secs(30), first)
                .await
                .expect("a wait outlived the shutdown");
            let mut late = IdleDeadline::new(Duration::from_secs(600), &shutdown);
            assert!(poll_once(&mut late).is_ready(), "a wait after the shutdown");
        });
    }

    #[test]
    fn a_shutdown_before_the_sweeper_started_is_seen() {
        let (tx, shutdown) = tokio::sync::watch::channel(false);
        tx.send(true).unwrap();
        runtime().block_on(async {
            let mut d = IdleDeadline::new(Duration::from_secs(600), &shutdown);
            assert!(poll_once(&mut d).is_ready());
        });
    }

    #[test]
    fn without_a_shutdown_sender_waits_keep_their_deadline() {
        let (tx, shutdown) = tokio::sync::watch::channel(false);
        drop(tx);
        runtime().block_on(async {
            let started = Instant::now();
            IdleDeadline::new(Duration::from_millis(150), &shutdown).await;
            assert!(started.elapsed() >= Duration::from_millis(150));
            let mut long = IdleDeadline::new(Duration::from_secs(600), &shutdown);
            assert!(tokio::time::timeout(SWEEP * 3, &mut long).await.is_err());
        });
    }
}
