-- hotchan schema, version 1: the seed's tables, columns, names and types
-- (shared/seed/), plus what the API contract needs.

CREATE TABLE channels (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  type VARCHAR(10) NOT NULL CHECK (type IN ('direct', 'group')),
  name VARCHAR(100),
  created_at TIMESTAMPTZ DEFAULT now(),
  -- The channel's change sequence: every post, edit and delete takes the next value
  -- while holding this row's lock, so ids and seqs of one channel commit in order.
  last_seq BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE channel_members (
  channel_id UUID REFERENCES channels(id),
  user_id UUID NOT NULL,
  role VARCHAR(20) DEFAULT 'member',
  last_read_message_id BIGINT,
  joined_at TIMESTAMPTZ DEFAULT now(),
  PRIMARY KEY (channel_id, user_id)
);

-- The seed's unread query looks memberships up by user.
CREATE INDEX idx_channel_members_user ON channel_members(user_id);

CREATE TABLE messages (
  id BIGSERIAL PRIMARY KEY,
  channel_id UUID REFERENCES channels(id),
  sender_id UUID NOT NULL,
  content TEXT NOT NULL,
  reply_to_id BIGINT REFERENCES messages(id),
  created_at TIMESTAMPTZ DEFAULT now(),
  updated_at TIMESTAMPTZ,
  deleted_at TIMESTAMPTZ,
  -- The channel seq of this message's last change (post, edit or delete).
  seq BIGINT NOT NULL,
  -- The client's idempotency key for the post, unique within a channel.
  client_msg_id VARCHAR(64),
  CONSTRAINT messages_channel_client_msg_id UNIQUE (channel_id, client_msg_id)
);

-- The seed's cursor index: pages of live messages.
CREATE INDEX idx_messages_channel_cursor
  ON messages(channel_id, id DESC) WHERE deleted_at IS NULL;

-- Reconnection sync reads the changes of a channel after a seq.
CREATE UNIQUE INDEX idx_messages_channel_seq ON messages(channel_id, seq);
