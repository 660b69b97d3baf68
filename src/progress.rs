//! A progress bar on stderr for the long steps a person waits on (seeding, converting a
//! table), with the elapsed time and an estimate of what is left.

use std::io::Write;
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    shown: u64,
    started: Instant,
}

const WIDTH: u64 = 30;

/// `1h02m`, `3m05s` or `12s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

impl Progress {
    pub fn new(label: impl Into<String>, total: u64) -> Progress {
        let p = Progress {
            label: label.into(),
            total: total.max(1),
            done: 0,
            shown: u64::MAX,
            started: Instant::now(),
        };
        p.draw();
        p
    }

    pub fn add(&mut self, n: u64) {
        self.set(self.done + n);
    }

    /// Moves the bar to `done` of the total.
    pub fn set(&mut self, done: u64) {
        self.done = done.min(self.total);
        let percent = self.done * 100 / self.total;
        if percent != self.shown {
            self.shown = percent;
            self.draw();
        }
    }

    /// What is left at the rate so far; `None` before anything is done.
    fn remaining(&self) -> Option<Duration> {
        (self.done > 0).then(|| {
            let per_item = self.started.elapsed().as_secs_f64() / self.done as f64;
            Duration::from_secs_f64(per_item * (self.total - self.done) as f64)
        })
    }

    fn draw(&self) {
        let filled = self.done * WIDTH / self.total;
        let bar: String = (0..WIDTH)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        let eta = self
            .remaining()
            .map_or(String::new(), |r| format!(", about {} left", human(r)));
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{bar}] {:>3}% ({}/{}; {}{eta})  ",
            self.label,
            self.done * 100 / self.total,
            self.done,
            self.total,
            human(self.started.elapsed()),
        );
        let _ = err.flush();
    }

    pub fn finish(self) {
        let _ = writeln!(std::io::stderr());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(12)), "12s");
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(3720)), "1h02m");
    }
}
