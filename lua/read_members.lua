-- read_members: a channel's member hash in one round trip, or the version a fill must present.
-- KEYS[1] members (hash), KEYS[2] mver (string)
-- ARGV[1] a fresh random version, set when mver is missing; ARGV[2] TTL in ms
-- Returns {1, {field, value, ...}} on a hit (the field '_' marks a loaded set),
--         {0, version} on a miss.
-- The opening checks are the same as in read_window.lua: Redis loads each script on its own,
-- so they cannot share code (Redis Functions could, from 7.0). Keep both in step.
local all = redis.call('HGETALL', KEYS[1])
if #all > 0 then
  return {1, all}
end
local ver = redis.call('GET', KEYS[2])
if not ver then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  ver = ARGV[1]
end
return {0, ver}
