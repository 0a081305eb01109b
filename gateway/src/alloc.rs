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

/// Turns transparent huge pages off for this process, first thing in `main`.
///
/// mimalloc reserves its heap as one large region and marks it `MADV_HUGEPAGE`. With the kernel
/// in its common `madvise` mode, a first touch then backs 2 MiB at once, and khugepaged later
/// walks the region and collapses ranges that are mostly empty back into 2 MiB pages (it
/// collapses a range with a single page in use: `max_ptes_none` 511), undoing what mimalloc
/// gave back. In the soak, resident memory was flat for about 20 minutes, then rose by 20–25%
/// as khugepaged reached the heap; with glibc's malloc (no such marking) it stayed flat. A
/// gateway's heap is tens of megabytes: huge pages save little in TLB misses and cost
/// predictable memory per connection. `PR_SET_THP_DISABLE` applies to the mappings made
/// before it too, and is inherited by `anygate`'s children.
pub fn no_huge_pages() {
    // Safety: prctl with these arguments only sets a flag on this process's memory map.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

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
