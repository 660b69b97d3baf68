-- hotchan schema, version 3: this database's identity. It is part of every Redis key and
-- pub/sub channel hotchan uses, so a recreated database (or another one sharing the Redis
-- and prefix) never sees cache entries made from different data.
CREATE TABLE hotchan_identity (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO hotchan_identity DEFAULT VALUES;
