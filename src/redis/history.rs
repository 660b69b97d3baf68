//! Deep history in Redis: a channel's runs in one hash, fenced by one version
//! (`lua/read_history.lua`, `lua/fill_history.lua`; edits and deletes drop the runs they
//! touch in `lua/rewrite.lua`).

use fred::types::Value;

use super::{codec, fresh_version, version_of, Redis, RedisError};
use crate::domain::history::Run;
use crate::domain::{ChannelId, Cursor};

/// What a history read found: the version a fill must present, and the run that covers
/// the cursor, if any.
pub struct HistoryRead {
    pub version: String,
    pub run: Option<Run>,
}

impl Redis {
    /// The run that holds the most of a page past `cursor`; `None` for the latest page.
    pub async fn read_history(
        &self,
        channel: ChannelId,
        cursor: Cursor,
    ) -> Result<Option<HistoryRead>, RedisError> {
        let (at, side) = match cursor {
            Cursor::Latest => return Ok(None),
            Cursor::Before(x) => (x.0, "b"),
            Cursor::After(x) => (x.0, "a"),
        };
        let k = self.keys(channel);
        let answer = self
            .eval(
                &self.scripts.read_history,
                vec![k.hist, k.hver],
                vec![
                    fresh_version(),
                    self.ttl_ms(),
                    Value::from(at),
                    Value::from(side),
                ],
            )
            .await?;
        let mut parts = answer.into_array().into_iter();
        let version = version_of(parts.next())?;
        // An undecodable run (another build wrote it) is a miss; the next fill replaces it.
        let run = parts
            .next()
            .and_then(|v| v.as_bytes().and_then(|b| codec::decode_run(channel, b)));
        Ok(Some(HistoryRead { version, run }))
    }

    /// Installs a run read from Postgres if the version is unchanged, keeping at most
    /// `most` runs of the channel. True when installed.
    pub async fn fill_history(
        &self,
        channel: ChannelId,
        version: &str,
        run: &Run,
        most: usize,
    ) -> Result<bool, RedisError> {
        let k = self.keys(channel);
        let args = vec![
            Value::from(version),
            self.ttl_ms(),
            Value::from(format!("{}:{}", run.top.0, run.low.0)),
            Value::Bytes(codec::encode_run(run).into()),
            Value::from(most as i64),
        ];
        let answer = self
            .eval(&self.scripts.fill_history, vec![k.hist, k.hver], args)
            .await?;
        Ok(answer.as_i64() == Some(1))
    }
}
