//! Scheduling priority for a batch's background work.
//!
//! A batch's write stage runs the store's inserts on one thread, the rows it inserts
//! being made on another, and the blocking index's own threads beside them, on however
//! few cores the machine has. The store's thread is the stage's critical path: its index
//! builds and commit come after its inserts, alone. The indexing threads only have to be
//! done by the time the store commits, so they run at a lower priority and take the cores
//! the store leaves idle, instead of sharing them evenly while the store waits.
#![allow(unsafe_code)]

/// The nice value given to background threads (0 is normal, 19 the lowest priority).
const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority, and that of the threads it starts
/// from now on, to [`BACKGROUND_NICE`] (never raises it: a run started with `nice` keeps
/// its lower priority). Best effort: where it cannot (another operating system, a
/// sandbox that refuses), the thread keeps its priority.
pub fn run_in_background() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `getpriority` and `setpriority` take no pointers. On Linux the nice
        // value belongs to each thread, and `who = 0` with `PRIO_PROCESS` names the
        // calling thread only; threads it creates afterwards inherit the value. A failed
        // `getpriority` returns -1, below the background value, and is then overridden.
        let outcome = unsafe {
            if libc::getpriority(libc::PRIO_PROCESS, 0) >= BACKGROUND_NICE {
                0
            } else {
                libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE)
            }
        };
        if outcome != 0 {
            tracing::debug!("could not lower a background thread's priority");
        }
    }
}
