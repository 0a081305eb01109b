//! Giving memory back after a burst of connections closes.
//!
//! mimalloc (the global allocator, see main.rs) purges freed pages back to the OS lazily, from
//! a later allocation on the same thread; a worker that goes quiet after a thousand slow
//! clients were cut off would keep their memory until its next busy spell. A closing
//! connection schedules a collection on its own thread a second later (one at a time per
//! thread), so memory comes back about a second after a burst ends; steady traffic pays one
//! collection a second per thread at most.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::time::Duration;

/// mimalloc as the global allocator, asked for alignment only when a type needs more than
/// mimalloc gives every block.
///
/// The `mimalloc` crate's allocator passes every request to `mi_malloc_aligned`, whose fast
/// path only covers blocks up to 1 KiB. A larger block (Pingora's and tokio's buffers, header
/// maps) whose size class is not a power of two up to 4 KiB then takes the over-allocating
/// path: a bigger block, an aligned pointer inside it, and its page marked as holding interior
/// pointers, which every later free on that page pays for. Under callgrind that was 19
/// allocations and about 3,700 instructions per proxied request. Every mimalloc block is a multiple of
/// eight bytes in a page aligned to at least 16, so `mi_malloc` already satisfies alignments up
/// to eight, as the system allocator's `malloc` does in Rust's standard library.
pub struct MiMalloc;

/// Alignment every `mi_malloc` block has.
const PLAIN_ALIGN: usize = 8;

// Safety: each method forwards to the mimalloc function for the same operation; blocks from
// either family are freed by `mi_free`, and a block is reallocated with the family that
// allocated it, since the choice depends only on the layout's alignment, which stays the same.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            libmimalloc_sys::mi_malloc(layout.size()) as *mut u8
        } else {
            libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            libmimalloc_sys::mi_zalloc(layout.size()) as *mut u8
        } else {
            libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        libmimalloc_sys::mi_free(ptr as *mut c_void)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            libmimalloc_sys::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            libmimalloc_sys::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align())
                as *mut u8
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block is aligned as its layout asks, zeroed when asked, and keeps its bytes and its
    /// alignment through growing and shrinking: small and large sizes, plain and raised
    /// alignments (tokio's tasks ask for 128).
    #[test]
    fn blocks_are_aligned_zeroed_and_kept_through_realloc() {
        let a = MiMalloc;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [1usize, 7, 8, 24, 100, 1000, 1025, 1500, 4096, 5000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // Safety: the layouts are non-zero sized; each block is freed once, with the
                // layout it has at that point.
                unsafe {
                    let z = a.alloc_zeroed(layout);
                    assert!(!z.is_null());
                    assert_eq!(z as usize % align, 0, "zeroed size {size} align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);

                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    for i in 0..size {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let grown = a.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "grown {size} align {align}");
                    for i in 0..size {
                        assert_eq!(*grown.add(i), (i % 251) as u8);
                    }
                    let big = Layout::from_size_align(size * 3, align).unwrap();
                    let keep = size.div_ceil(2);
                    let shrunk = a.realloc(grown, big, keep);
                    assert_eq!(shrunk as usize % align, 0, "shrunk {size} align {align}");
                    for i in 0..keep {
                        assert_eq!(*shrunk.add(i), (i % 251) as u8);
                    }
                    a.dealloc(shrunk, Layout::from_size_align(keep, align).unwrap());
                }
            }
        }
    }
}
