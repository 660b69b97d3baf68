-- hotchan schema, version 5: the seed's cursor index over live messages also carries
-- sender_id, so an unread count (live messages after the marker, not the member's own) is
-- an index-only scan of the range after the marker instead of a heap visit per message.
-- Rebuilding it blocks writes to messages for as long as the build takes (README).
CREATE INDEX idx_messages_channel_live
  ON messages (channel_id, id DESC) INCLUDE (sender_id) WHERE deleted_at IS NULL;
DROP INDEX idx_messages_channel_cursor;
ALTER INDEX idx_messages_channel_live RENAME TO idx_messages_channel_cursor;
