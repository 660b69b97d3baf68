-- feed_seen: write-through of a user's unseen marker; it only moves forward.
-- KEYS[1] fmeta, KEYS[2] fver
-- ARGV[1] the marker now in force
-- Returns 1 updated, 0 not cached.
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('INCR', KEYS[2])
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local seen = redis.call('HGET', KEYS[1], 'seen')
if not seen or seen == '' or tonumber(seen) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'seen', ARGV[1])
end
return 1
