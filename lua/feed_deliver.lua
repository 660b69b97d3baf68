-- feed_deliver: write-through of deliveries onto a user's feed, only if it is cached.
-- KEYS[1] feed, KEYS[2] fmeta, KEYS[3] fver
-- ARGV[1] TTL in ms, ARGV[2] hot feed size, ARGV[3] prev, ARGV[4..] new ids, ascending
-- prev is the newest id of the user's feed below the new ids, as Postgres had it when
-- they committed ('0' for none); '?' only asks whether the feed is cached.
-- Every call bumps an existing fence version, so a fill that read Postgres before the
-- delivery is refused; a user with no version and no feed costs nothing.
-- Returns -2 not cached; with prev '?', the cached top; else 1 appended, -1 dropped (the
-- cached top is not prev: a delivery in between has not landed or was lost).
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('INCR', KEYS[3])
end
local m = redis.call('HMGET', KEYS[2], 'top', 'count')
if not m[1] then
  return -2
end
if ARGV[3] == '?' then
  return tonumber(m[1])
end
local count = tonumber(m[2])
if m[1] ~= ARGV[3] or redis.call('LLEN', KEYS[1]) ~= count then
  redis.call('DEL', KEYS[1], KEYS[2])
  return -1
end
local top = m[1]
for i = 4, #ARGV do
  if tonumber(ARGV[i]) > tonumber(top) then
    redis.call('LPUSH', KEYS[1], ARGV[i])
    count = count + 1
    top = ARGV[i]
  end
end
local hot = tonumber(ARGV[2])
if count > hot then
  redis.call('LTRIM', KEYS[1], 0, hot - 1)
  count = hot
  redis.call('HSET', KEYS[2], 'complete', '0')
end
redis.call('HSET', KEYS[2], 'top', top, 'count', count)
-- All three live as long: a feed outliving its version would miss deliveries.
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return 1
