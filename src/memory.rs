//! Keeping resident size near what the caches weigh. glibc's allocator keeps freed memory
//! in per-thread arenas, and the churn of a full L1 (windows and runs loaded, evicted,
//! loaded again) fragments them: measured with `scripts/bench-memory`, resident size
//! crept up for minutes after L1 was full. So hotchan caps the arenas at startup and
//! returns free pages to the system every few seconds (`malloc_trim`). Only on glibc;
//! elsewhere these do nothing.

use std::time::Duration;

/// How often free pages are returned.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
        fn malloc_trim(pad: usize) -> i32;
    }
    /// `M_ARENA_MAX` in glibc's `malloc.h`.
    const M_ARENA_MAX: i32 = -8;

    pub fn cap_arenas(arenas: i32) {
        // SAFETY: mallopt only sets an allocator parameter; called once, before the
        // runtime's threads allocate much.
        unsafe {
            mallopt(M_ARENA_MAX, arenas);
        }
    }

    pub fn trim() {
        // SAFETY: malloc_trim only releases free memory; it is thread-safe.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub fn cap_arenas(_arenas: i32) {}
    pub fn trim() {}
}

/// Caps the allocator's arenas (two per core: enough for the runtime's threads).
pub fn cap_arenas() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    glibc::cap_arenas((2 * cores).min(64) as i32);
}

/// Returns free pages to the system every [`TRIM_INTERVAL`], until the runtime ends.
pub fn spawn_trimmer() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut ticker = tokio::time::interval(TRIM_INTERVAL);
        loop {
            ticker.tick().await;
            tokio::task::spawn_blocking(glibc::trim);
        }
    })
}
