//! Giving memory back after a burst of connections closes.
//!
//! mimalloc (the global allocator, see main.rs) purges freed pages back to the OS lazily, from
//! a later allocation on the same thread; a worker that goes quiet after a thousand slow
//! clients were cut off would keep their memory until its next busy spell. A closing
//! connection schedules a collection on its own thread a second later (one at a time per
//! thread), so memory comes back about a second after a burst ends; steady traffic pays one
//! collection a second per thread at most.

use std::cell::Cell;
use std::time::Duration;

const AFTER: Duration = Duration::from_secs(1);

thread_local! {
    static PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Called when a client connection ends, on the thread that served it.
pub fn connection_closed() {
    if PENDING.with(|p| p.replace(true)) {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        PENDING.with(|p| p.set(false));
        return;
    };
    // Pingora runs one single-threaded runtime per thread (`work_stealing: false`), so the
    // task runs on this thread, whose heap holds what the connections freed.
    rt.spawn(async {
        tokio::time::sleep(AFTER).await;
        PENDING.with(|p| p.set(false));
        // Safety: mi_collect only walks the calling thread's mimalloc heap; it is sound at any
        // time, also when mimalloc is not the global allocator (its heap is then empty).
        unsafe { libmimalloc_sys::mi_collect(true) };
    });
}
