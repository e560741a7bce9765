//! The binary's global allocator: mimalloc (glibc's malloc fragments badly under the
//! engine's many short-lived small allocations and spent a fifth of the runtime in
//! consolidation), counting live bytes so benchmarks can report bytes per tracked stream
//! without trusting the operating system's page-granular resident size.
//!
//! Counting is off until a benchmark turns it on ([`start_counting`]): `ordo run` pays
//! one relaxed load of a flag per allocation, not an atomic add on a shared counter.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static ALLOCATED_BYTES: AtomicUsize = AtomicUsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// mimalloc, counting live bytes. Install it in a binary with
/// `#[global_allocator]`.
pub struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to mimalloc; the counter is only
// bookkeeping.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATED_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATED_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATED_BYTES.fetch_add(new_size, Ordering::Relaxed);
            ALLOCATED_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// Turns counting on (from now on, for the rest of the process) and returns the count now,
/// the `before` of a measure: the heap grown since is [`allocated_since`]`(before)`.
pub fn start_counting() -> usize {
    COUNTING.store(true, Ordering::SeqCst);
    ALLOCATED_BYTES.load(Ordering::SeqCst)
}

/// Heap bytes allocated and not freed since `before` ([`start_counting`]), when
/// [`CountingAllocator`] is the global allocator (0 otherwise). The absolute count means
/// nothing (blocks allocated before counting began are subtracted when freed, and it may
/// wrap); differences are exact.
pub fn allocated_since(before: usize) -> usize {
    let now = ALLOCATED_BYTES.load(Ordering::SeqCst);
    // A measure that freed more than it allocated grew nothing.
    let grown = now.wrapping_sub(before);
    if grown > usize::MAX / 2 {
        0
    } else {
        grown
    }
}

/// Turns transparent huge pages off (or back on) for this process.
///
/// mimalloc asks the kernel for huge pages on its arenas (`madvise`), and the kernel then
/// zeroes 2 MiB at the first touch of each: a stall of a hundred microseconds or more in
/// whichever delivery grows the heap. A consumer wants flat latency more than the few
/// percent huge pages save on TLB misses (the advice databases such as Redis give), so
/// `ordo run`, `ordo relay` and the benchmarks of the consumer path turn them off; the
/// core benchmark keeps them (a library embedding the engine gets the system's default).
/// Returns whether the kernel took the setting.
pub fn set_transparent_huge_pages(enabled: bool) -> bool {
    let disable = libc::c_ulong::from(!enabled);
    // SAFETY: PR_SET_THP_DISABLE takes one integer flag and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, disable, 0, 0, 0) == 0 }
}
