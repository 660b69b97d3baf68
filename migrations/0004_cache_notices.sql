-- hotchan schema, version 4: the cache's second invalidation path. A write whose Redis
-- step failed records its channel here and NOTIFYs `hotchan_cache` in the same statement,
-- so instances that still reach Redis drop what they hold of it. Rows are kept for an hour
-- (pruned by the instances) so a listener that lost its connection can catch up on what
-- it missed. `channel_id` NULL means every channel (a flush that could not reach Redis).
CREATE TABLE cache_notices (
  id BIGSERIAL PRIMARY KEY,
  at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
  origin TEXT NOT NULL,
  channel_id UUID
);
CREATE INDEX cache_notices_at ON cache_notices (at);
