//! Handing memory a batch has freed back to the operating system between its stages.
//!
//! The binary allocates with mimalloc, which keeps freed pages for a second before
//! returning them, and only when the thread that owns them allocates again. A batch
//! frees hundreds of megabytes at once between stages (the file's rows once
//! normalised, the in-memory index once blocked, the candidate pairs once decided)
//! and the next stage allocates at once; without a collection both are resident
//! together, and that sum is the run's peak.
#![allow(unsafe_code)]

/// Returns the pages freed so far, on every rayon worker thread and this one, to the
/// operating system.
pub fn release_freed_memory() {
    rayon::broadcast(|_| collect());
    collect();
}

fn collect() {
    // SAFETY: `mi_collect` takes no pointers and only frees pages of the calling
    // thread's own mimalloc heap that hold no live blocks; mimalloc documents it as
    // callable at any time. Where mimalloc is not the global allocator (tests), its
    // heaps are empty and the call does nothing.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
