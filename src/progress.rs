//! A progress bar on stderr, for the long steps a person waits on.

use std::io::Write;

pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    shown: u64,
}

const WIDTH: u64 = 30;

impl Progress {
    pub fn new(label: impl Into<String>, total: u64) -> Progress {
        let p = Progress {
            label: label.into(),
            total: total.max(1),
            done: 0,
            shown: u64::MAX,
        };
        p.draw();
        p
    }

    pub fn add(&mut self, n: u64) {
        self.done = (self.done + n).min(self.total);
        let percent = self.done * 100 / self.total;
        if percent != self.shown {
            self.shown = percent;
            self.draw();
        }
    }

    fn draw(&self) {
        let filled = self.done * WIDTH / self.total;
        let bar: String = (0..WIDTH)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{bar}] {:>3}% ({}/{})",
            self.label,
            self.done * 100 / self.total,
            self.done,
            self.total
        );
        let _ = err.flush();
    }

    pub fn finish(self) {
        let _ = writeln!(std::io::stderr());
    }
}
