-- read_window: a channel's window in one round trip, or the version a fill must present.
-- KEYS[1] msgs (list), KEYS[2] meta (hash), KEYS[3] ver (string)
-- ARGV[1] a fresh random version, set when ver is missing; ARGV[2] TTL in ms;
-- ARGV[3] the index of the last element wanted (-1: all; n: the newest n + 1 only)
-- Returns {1, meta as {field, value, ...}, elements newest first} on a hit,
--         {0, version} on a miss.
-- The opening checks are the same as in read_members.lua: Redis loads each script on its own,
-- so they cannot share code (Redis Functions could, from 7.0). Keep both in step.
local meta = redis.call('HGETALL', KEYS[2])
if #meta > 0 then
  return {1, meta, redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[3]))}
end
local ver = redis.call('GET', KEYS[3])
if not ver then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
  ver = ARGV[1]
end
return {0, ver}
