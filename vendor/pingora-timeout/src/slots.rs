// anygate patch (see PATCHES.md): per-thread deadline slots for fast timeouts.
//
// A fast timeout used to subscribe to a shared timer per 10 ms bucket: a clock read for the
// watchdog and another for the deadline, a read lock and a `BTreeMap` lookup (a write lock and
// an insert for a new bucket), two `Arc` clones, then a `tokio::sync::Notify` waiter linked
// into the bucket's list under its mutex on the first poll and unlinked under it again on drop:
// about 1,300 instructions per timer. Nearly every timeout is dropped long before its deadline
// (an upstream answers in milliseconds, the timeout is seconds), so all of that is set up only
// to be taken down.
//
// Here a timer is a slot in its thread's table: one clock read, an uncontended lock to take a
// slot (reused from a free list), one to store the waker when it is first polled, one to give
// the slot back. The clock thread, which already wakes every 10 ms, fires the slots whose
// deadline has passed; it looks at a table only when its earliest deadline has come, so a
// table of timers that are all dropped in time costs it one comparison per tick.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// A slot's deadline when it is free.
const FREE: u64 = u64::MAX;

#[derive(Default)]
pub(crate) struct Table {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// No unfired slot has a deadline before this (a lower bound: a dropped slot may have
    /// set it). `u64::MAX` when nothing is pending.
    earliest: u64,
}

struct Slot {
    /// Milliseconds since the timer manager's zero, rounded up to its resolution; `FREE`.
    deadline: u64,
    waker: Option<Waker>,
    fired: bool,
}

pub(crate) type Shared = Arc<Mutex<Table>>;

/// The table's lock (nothing run under it can panic half-way; a poisoned lock is taken as is).
fn lock(t: &Mutex<Table>) -> MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn new_table() -> Shared {
    Arc::new(Mutex::new(Table {
        earliest: u64::MAX,
        ..Table::default()
    }))
}

/// Takes a slot in `table` for `deadline` (milliseconds since the manager's zero).
pub(crate) fn register(table: &Shared, deadline: u64) -> SlotTimer {
    let index = {
        let mut t = lock(table);
        let slot = Slot {
            deadline,
            waker: None,
            fired: false,
        };
        let index = match t.free.pop() {
            Some(i) => {
                t.slots[i] = slot;
                i
            }
            None => {
                t.slots.push(slot);
                t.slots.len() - 1
            }
        };
        t.earliest = t.earliest.min(deadline);
        index
    };
    SlotTimer {
        table: Some(table.clone()),
        index,
    }
}

/// Fires every slot of `table` whose deadline is not after `now`, waking its task after the
/// lock is released.
pub(crate) fn fire_due(table: &Mutex<Table>, now: u64, wake: &mut Vec<Waker>) {
    {
        let mut t = lock(table);
        if t.earliest > now {
            return;
        }
        let mut earliest = u64::MAX;
        for slot in t.slots.iter_mut() {
            if slot.deadline == FREE || slot.fired {
                continue;
            }
            if slot.deadline <= now {
                slot.fired = true;
                if let Some(w) = slot.waker.take() {
                    wake.push(w);
                }
            } else {
                earliest = earliest.min(slot.deadline);
            }
        }
        t.earliest = earliest;
    }
    for w in wake.drain(..) {
        w.wake();
    }
}

/// A fast timeout's timer: ready once the clock thread has fired its slot.
pub struct SlotTimer {
    /// `None`: fired from the start (registered while the timers were paused for a fork).
    table: Option<Shared>,
    index: usize,
}

impl SlotTimer {
    /// A timer that is already fired.
    pub(crate) fn fired() -> SlotTimer {
        SlotTimer {
            table: None,
            index: 0,
        }
    }
}

impl Future for SlotTimer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(table) = &self.table else {
            return Poll::Ready(());
        };
        let mut t = lock(table);
        let slot = &mut t.slots[self.index];
        if slot.fired {
            return Poll::Ready(());
        }
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for SlotTimer {
    fn drop(&mut self) {
        let Some(table) = self.table.take() else {
            return;
        };
        let waker = {
            let mut t = lock(&table);
            let slot = &mut t.slots[self.index];
            slot.deadline = FREE;
            slot.fired = false;
            let waker = slot.waker.take();
            t.free.push(self.index);
            waker
        };
        // Dropped outside the lock (a waker's drop may run the task's own code).
        drop(waker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn slots_fire_at_their_deadline_and_are_reused() {
        let table = new_table();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut early = register(&table, 10);
        let mut late = register(&table, 30);
        assert!(Pin::new(&mut early).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut late).poll(&mut cx).is_pending());
        let mut wake = Vec::new();
        fire_due(&table, 9, &mut wake);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        fire_due(&table, 10, &mut wake);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut early).poll(&mut cx).is_ready());
        assert!(Pin::new(&mut late).poll(&mut cx).is_pending());
        assert_eq!(lock(&table).earliest, 30);
        drop(early);
        // The freed slot is the next one taken.
        let reused = register(&table, 50);
        assert_eq!(reused.index, 0);
        drop(late);
        fire_due(&table, 40, &mut wake);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "a dropped timer never fires"
        );
        assert_eq!(lock(&table).earliest, 50);
        drop(reused);
        fire_due(&table, 60, &mut wake);
        assert_eq!(lock(&table).earliest, u64::MAX);
        assert_eq!(lock(&table).free.len(), 2);
        assert!(Pin::new(&mut SlotTimer::fired()).poll(&mut cx).is_ready());
    }
}
