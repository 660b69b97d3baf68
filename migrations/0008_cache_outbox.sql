-- hotchan schema, version 8: the cache outbox (API.md promise 7). Every write that changes
-- what the cache holds records here, in its own transaction, the scopes it changed
-- (`<channel id>`, `f:<user id>`, `e:<event id>`, as `Scope::encode` writes them). The
-- instance that made the write deletes the row once its cache step is done (in batches);
-- a row still here a second after it was written belongs to a write whose instance died
-- (or stalled) between commit and cache, and any instance replays it: drops those scopes
-- from Redis, fencing in-flight fills, and tells every instance to drop them from L1.
-- A restarted instance treats every row as cut short. Rows live for milliseconds, so the
-- table stays small; vacuum it eagerly, as a queue. UNLOGGED: its rows and their deletes
-- write no WAL (measured: a logged outbox cost posts about 14%); the price is that a crash
-- of Postgres itself empties it, so a write whose instance died at the same moment as
-- Postgres is not replayed, and a standby promoted in a failover starts with it empty.
CREATE UNLOGGED TABLE cache_outbox (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at TIMESTAMPTZ NOT NULL DEFAULT now(),
  scopes TEXT[] NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
