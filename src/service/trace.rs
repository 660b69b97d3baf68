//! The access trace of a running instance (`serve --trace-file`): one line per channel
//! read, `<channel id> <depth>`, for `hotchan bench --replay`. Lines go through a bounded
//! queue to a writer task; when the queue is full the line is dropped, so
//! tracing never slows a request down.

use std::path::Path;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::domain::ChannelId;

/// Lines waiting for the writer; past this they are dropped.
pub const QUEUE: usize = 65_536;

pub struct Trace {
    lines: mpsc::Sender<(ChannelId, u32)>,
}

impl Trace {
    /// Lines waiting for the writer (at most [`QUEUE`]).
    pub fn backlog(&self) -> usize {
        self.lines.max_capacity() - self.lines.capacity()
    }
}

impl Trace {
    /// Opens (appends to) `path` and starts the writer task.
    pub async fn open(path: &Path) -> std::io::Result<Trace> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let (lines, mut rx) = mpsc::channel::<(ChannelId, u32)>(QUEUE);
        tokio::spawn(async move {
            let mut out = tokio::io::BufWriter::new(file);
            while let Some((channel, depth)) = rx.recv().await {
                if out
                    .write_all(format!("{channel} {depth}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                if rx.is_empty() && out.flush().await.is_err() {
                    return;
                }
            }
            let _ = out.flush().await;
        });
        Ok(Trace { lines })
    }

    /// Records a read of `channel` that needs `depth` messages back from the newest.
    pub fn record(&self, channel: ChannelId, depth: u32) {
        // A full queue drops the line rather than wait.
        let _ = self.lines.try_send((channel, depth));
    }
}
