-- hotchan schema, version 2: the cache's window fill reads a channel's newest messages by
-- id, tombstones included; the seed's partial index holds live messages only.
CREATE INDEX idx_messages_channel_id_all ON messages(channel_id, id DESC);
