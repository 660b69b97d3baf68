//! Named crash points, for the tests of crash safety (API.md promise 7) and nothing else:
//! `--crash-at <point>` (hidden; `HOTCHAN_CRASH_AT`) aborts the process, as a SIGKILL
//! would end it (no destructor, no flush, no goodbye to any server), the first time a
//! write reaches that step. Unarmed, a point costs one load of a static.

use std::sync::OnceLock;

/// A write committed in Postgres; nothing of it reached Redis, L1 or the other instances.
pub const AFTER_COMMIT: &str = "after-commit";
/// Redis took the write (where it could); neither L1 here nor the other instances were told.
pub const AFTER_REDIS: &str = "after-redis";
/// Every point, for the setting's check.
pub const POINTS: &[&str] = &[AFTER_COMMIT, AFTER_REDIS];

static ARMED: OnceLock<&'static str> = OnceLock::new();

/// Arms `point` for the life of the process (a second call changes nothing).
pub fn arm(point: &'static str) {
    let _ = ARMED.set(point);
}

/// Aborts the process when `point` is armed.
pub fn point(point: &str) {
    if ARMED.get().is_some_and(|armed| *armed == point) {
        eprintln!("hotchan: crash point {point} reached: aborting (--crash-at)");
        std::process::abort();
    }
}
