//! The Redis side of a channel (`lua/README.md`): its window of messages, its member set,
//! the write-through scripts of posts, edits, deletes, membership and read markers, and
//! the drop of everything of a channel.

use fred::prelude::KeysInterface;
use fred::types::Value;

use super::{codec, fresh_version, version_of, Redis, RedisError, LOADED_MARKER};
use crate::domain::window::{Members, Window};
use crate::domain::{ChannelId, Member, Message, UserId};

/// What a window read found.
pub enum WindowRead {
    Hit(Window),
    /// Not cached; a fill must present this version.
    Miss(String),
}

/// What a read of a latest page found.
pub enum PageRead {
    /// The page, as [`Redis::store_page`] kept it for the window as it is now.
    Kept(bytes::Bytes),
    /// No page kept for the window as it is now: what the window read found.
    Window(WindowRead),
}

/// What a member read found.
pub enum MembersRead {
    Hit(Members),
    /// Not cached; a fill must present this version.
    Miss(String),
}

impl Redis {
    pub async fn read_window(&self, channel: ChannelId) -> Result<WindowRead, RedisError> {
        self.read_window_head(channel, None).await
    }

    /// Like [`Redis::read_window`], but with `head: Some(n)` only the newest `n` messages
    /// are read. A head is itself a window (every message from its oldest id up is in it);
    /// it is complete only when it holds the whole window, and it answers no sync beyond
    /// the current seq (older changes may sit below it).
    pub async fn read_window_head(
        &self,
        channel: ChannelId,
        head: Option<usize>,
    ) -> Result<WindowRead, RedisError> {
        match self.read_window_page(channel, head, None).await? {
            PageRead::Window(read) => Ok(read),
            PageRead::Kept(_) => Err(RedisError::Protocol), // no page was asked for
        }
    }

    /// Like [`Redis::read_window_head`], and with `page: Some(limit)` the latest page of
    /// `limit` messages instead, when [`Redis::store_page`] kept it for the window as it
    /// is now (one round trip either way).
    pub async fn read_window_page(
        &self,
        channel: ChannelId,
        head: Option<usize>,
        page: Option<u32>,
    ) -> Result<PageRead, RedisError> {
        let k = self.keys(channel);
        let last = head.map_or(-1, |n| n.max(1) as i64 - 1);
        let field = page.map_or_else(String::new, codec::page_field);
        let answer = self
            .eval(
                &self.scripts.read_window,
                vec![k.msgs, k.meta, k.ver],
                vec![
                    fresh_version(),
                    self.ttl_ms(),
                    Value::from(last),
                    Value::from(field),
                ],
            )
            .await?;
        let mut parts = answer.into_array().into_iter();
        match parts.next().and_then(|v| v.as_i64()) {
            Some(2) => {
                let stored = parts.next().and_then(|v| v.into_bytes());
                match stored.and_then(|b| codec::stored_page(&b)) {
                    Some(body) => Ok(PageRead::Kept(body)),
                    None => Err(RedisError::Protocol),
                }
            }
            Some(1) => {
                let meta = parts.next().ok_or(RedisError::Protocol)?.into_array();
                let elements = parts.next().ok_or(RedisError::Protocol)?.into_array();
                Ok(PageRead::Window(
                    match decode_window(channel, &meta, &elements, head) {
                        Some(window) => WindowRead::Hit(window),
                        // Undecodable or partial: a miss. The next fill replaces it; a fill
                        // needs a version, so take it now.
                        None => {
                            WindowRead::Miss(self.current_version(&self.keys(channel).ver).await?)
                        }
                    },
                ))
            }
            Some(0) => Ok(PageRead::Window(WindowRead::Miss(version_of(
                parts.next(),
            )?))),
            _ => Err(RedisError::Protocol),
        }
    }

    /// Keeps `body`, the latest page of `limit` messages made from the window at `seq`,
    /// beside the window, unless the window changed since (`lua/store_page.lua`). True
    /// when kept.
    pub async fn store_page(
        &self,
        channel: ChannelId,
        seq: i64,
        limit: u32,
        body: &[u8],
    ) -> Result<bool, RedisError> {
        let k = self.keys(channel);
        let answer = self
            .eval(
                &self.scripts.store_page,
                vec![k.meta],
                vec![
                    Value::from(seq),
                    Value::from(codec::page_field(limit)),
                    Value::Bytes(codec::page_value(seq, body).into()),
                ],
            )
            .await?;
        Ok(answer.as_i64() == Some(1))
    }

    async fn current_version(&self, key: &str) -> Result<String, RedisError> {
        let fresh = fresh_version();
        let ttl = self.settings.ttl.as_millis() as i64;
        let node = self.nodes.for_key(key.as_bytes());
        // SET NX then GET: a missing version becomes a fresh random one.
        let _: Value = self
            .bounded(node.client().set(
                key,
                fresh,
                Some(fred::types::Expiration::PX(ttl)),
                Some(fred::types::SetOptions::NX),
                false,
            ))
            .await?;
        let v: Option<String> = self.bounded(node.client().get(key)).await?;
        v.ok_or(RedisError::Protocol)
    }

    /// Installs a window read from Postgres if the version is unchanged. True when installed.
    pub async fn fill_window(&self, version: &str, window: &Window) -> Result<bool, RedisError> {
        let k = self.keys(window.channel.id);
        let mut args = Vec::with_capacity(7 + window.messages.len());
        args.extend([
            Value::from(version),
            self.ttl_ms(),
            Value::from(window.seq()),
            Value::from(window.floor),
            Value::from(i64::from(window.complete)),
            Value::Bytes(codec::encode_channel(&window.channel).into()),
            Value::from(codec::META_FORMAT),
        ]);
        args.extend(
            window
                .messages
                .iter()
                .map(|m| Value::Bytes(codec::encode_message(m).into())),
        );
        let answer = self
            .eval(&self.scripts.fill_window, vec![k.msgs, k.meta, k.ver], args)
            .await?;
        Ok(answer.as_i64() == Some(1))
    }

    /// Write-through of a post. Returns the script's answer (see `lua/append.lua`).
    pub async fn append(&self, message: &Message, hot_window: usize) -> Result<i64, RedisError> {
        let k = self.keys(message.channel_id);
        let args = vec![
            Value::from(message.seq),
            Value::Bytes(codec::encode_message(message).into()),
            Value::from(hot_window as i64),
            self.ttl_ms(),
            Value::from(codec::META_FORMAT),
        ];
        let answer = self
            .eval_write(&self.scripts.append, vec![k.msgs, k.meta, k.ver], args)
            .await?;
        answer.as_i64().ok_or(RedisError::Protocol)
    }

    /// Write-through of an edit or a delete. Returns the script's answer.
    pub async fn rewrite(&self, message: &Message) -> Result<i64, RedisError> {
        let k = self.keys(message.channel_id);
        let args = vec![
            Value::from(message.seq),
            Value::from(message.id.0),
            Value::Bytes(codec::encode_message(message).into()),
            self.ttl_ms(),
            Value::from(codec::META_FORMAT),
        ];
        let answer = self
            .eval_write(
                &self.scripts.rewrite,
                vec![k.msgs, k.meta, k.ver, k.hist, k.hver],
                args,
            )
            .await?;
        answer.as_i64().ok_or(RedisError::Protocol)
    }

    /// Forgets everything cached of a channel and fences in-flight fills.
    pub async fn drop_channel(&self, channel: ChannelId) -> Result<(), RedisError> {
        let k = self.keys(channel);
        self.eval_write(
            &self.scripts.drop_channel,
            vec![k.msgs, k.meta, k.ver, k.members, k.mver, k.hist, k.hver],
            vec![self.ttl_ms()],
        )
        .await
        .map(drop)
    }

    pub async fn read_members(&self, channel: ChannelId) -> Result<MembersRead, RedisError> {
        let k = self.keys(channel);
        let answer = self
            .eval(
                &self.scripts.read_members,
                vec![k.members, k.mver],
                vec![fresh_version(), self.ttl_ms()],
            )
            .await?;
        let mut parts = answer.into_array().into_iter();
        match parts.next().and_then(|v| v.as_i64()) {
            Some(1) => {
                let fields = parts.next().ok_or(RedisError::Protocol)?.into_array();
                Ok(match decode_members(&fields) {
                    Some(members) => MembersRead::Hit(members),
                    None => {
                        MembersRead::Miss(self.current_version(&self.keys(channel).mver).await?)
                    }
                })
            }
            Some(0) => Ok(MembersRead::Miss(version_of(parts.next())?)),
            _ => Err(RedisError::Protocol),
        }
    }

    pub async fn fill_members(
        &self,
        channel: ChannelId,
        version: &str,
        members: &Members,
    ) -> Result<bool, RedisError> {
        let k = self.keys(channel);
        let mut args = vec![
            Value::from(version),
            self.ttl_ms(),
            Value::from(LOADED_MARKER),
            Value::from("1"),
        ];
        for m in &members.members {
            args.push(Value::from(m.user_id.to_string()));
            args.push(Value::Bytes(codec::encode_member(m).into()));
        }
        let answer = self
            .eval(&self.scripts.fill_members, vec![k.members, k.mver], args)
            .await?;
        Ok(answer.as_i64() == Some(1))
    }

    /// Write-through of a membership change: the member hash is dropped.
    pub async fn drop_members(&self, channel: ChannelId) -> Result<(), RedisError> {
        let k = self.keys(channel);
        self.eval_write(
            &self.scripts.drop_members,
            vec![k.members, k.mver],
            vec![self.ttl_ms()],
        )
        .await
        .map(drop)
    }

    /// Write-through of a read marker (`member` as it is after the change).
    pub async fn mark_read(&self, channel: ChannelId, member: &Member) -> Result<i64, RedisError> {
        let k = self.keys(channel);
        let args = vec![
            Value::from(member.user_id.to_string()),
            Value::from(member.last_read_message_id.map_or(0, |m| m.0)),
            Value::from(codec::joined_at_micros(member)),
            self.ttl_ms(),
        ];
        let answer = self
            .eval_write(&self.scripts.mark_read, vec![k.members, k.mver], args)
            .await?;
        answer.as_i64().ok_or(RedisError::Protocol)
    }
}

/// `meta` as `lua/read_window.lua` returns it: seq, floor, complete, count, chan, fmt.
fn decode_window(
    channel: ChannelId,
    meta: &[Value],
    elements: &[Value],
    head: Option<usize>,
) -> Option<Window> {
    let [seq, floor, complete, count, chan, fmt] = meta else {
        return None;
    };
    let number = |v: &Value| v.as_str()?.parse::<i64>().ok();
    if fmt.as_str()?.as_ref() != codec::META_FORMAT {
        return None;
    }
    let count = number(count)?;
    let expected = head.map_or(count, |n| count.min(n.max(1) as i64));
    if expected != elements.len() as i64 {
        return None; // Part of the window was evicted.
    }
    let whole = expected == count;
    let seq = number(seq)?;
    let channel_info = codec::decode_channel(channel, seq, chan.as_bytes()?)?;
    let messages = elements
        .iter()
        .map(|e| codec::decode_message(channel, e.as_bytes()?))
        .collect::<Option<Vec<_>>>()?;
    Some(Window {
        channel: channel_info,
        messages,
        floor: if whole { number(floor)? } else { seq },
        complete: whole && number(complete)? == 1,
    })
}

fn decode_members(fields: &[Value]) -> Option<Members> {
    let mut loaded = false;
    let mut members = Vec::with_capacity(fields.len() / 2);
    for pair in fields.chunks(2) {
        let name = pair[0].as_str()?;
        if name == LOADED_MARKER {
            loaded = true;
            continue;
        }
        let user = UserId::parse(&name).ok()?;
        members.push(codec::decode_member(user, pair.get(1)?.as_bytes()?)?);
    }
    if !loaded {
        return None; // The marker was evicted or the hash is partial.
    }
    members.sort_by_key(|m| m.user_id);
    Some(Members { members })
}
