-- hotchan schema, version 6: activity feeds (README "Activity feeds").
-- The three tables that grow with traffic are partitioned by time range on `created_at`
-- (the event's own time, also in feed items and channel events, so one event's rows share
-- a partition). Partitions are made ahead and dropped whole by the retention task; no
-- foreign key points into them, so dropping one is never blocked.
CREATE SEQUENCE events_id_seq AS BIGINT;

CREATE TABLE events (
  id BIGINT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  actor_id UUID NOT NULL,
  verb VARCHAR(64) NOT NULL,
  object_type VARCHAR(64) NOT NULL,
  object_id VARCHAR(128) NOT NULL,
  target_type VARCHAR(64),
  target_id VARCHAR(128),
  data JSONB,
  channel_ids UUID[] NOT NULL DEFAULT '{}',
  client_event_id VARCHAR(64),
  -- How many recipients the event had when it was accepted (the replay answer).
  recipients INT NOT NULL,
  deleted_at TIMESTAMPTZ,
  -- A key of a partitioned table holds the partition key.
  PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

-- Replays are found under the publish lock (one publish at a time), so this index need
-- not be unique across partitions.
CREATE INDEX events_replay ON events (actor_id, client_event_id)
  WHERE client_event_id IS NOT NULL;

-- A user's feed: one row per delivered event. Delivering twice is ON CONFLICT DO NOTHING.
CREATE TABLE feed_items (
  user_id UUID NOT NULL,
  event_id BIGINT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (user_id, event_id, created_at)
) PARTITION BY RANGE (created_at);

-- The events published to a channel, written in the event's own transaction.
CREATE TABLE channel_events (
  channel_id UUID NOT NULL,
  event_id BIGINT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (channel_id, event_id, created_at)
) PARTITION BY RANGE (created_at);

-- Durable fan-out state of an audience delivered in the background, committed with its
-- event. `audience` is sorted and fixed at accept time; `next` recipients are delivered.
-- The row is deleted once every recipient has the event.
CREATE TABLE fanouts (
  event_id BIGINT PRIMARY KEY,
  created_at TIMESTAMPTZ NOT NULL,
  audience UUID[] NOT NULL,
  next INT NOT NULL DEFAULT 0
);

-- The unseen marker: only ever moves forward (GREATEST).
CREATE TABLE feed_seen (
  user_id UUID PRIMARY KEY,
  last_seen_event_id BIGINT NOT NULL
);
