-- mark_read: write-through of a read marker. Markers only move forward, so the higher of
-- the cached and the new one wins whatever order writes arrive in; a member that left and
-- joined again (another joined_at) has a different membership: the hash is dropped.
-- KEYS[1] members, KEYS[2] mver
-- ARGV[1] user id (the field), ARGV[2] the marker in force, ARGV[3] joined_at (µs),
-- ARGV[4] TTL in ms
-- Returns 1 applied, 0 not cached, -1 hash dropped.
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then
  return 0
end
local marker, joined = struct.unpack('>i8i8', value, 3)
if joined ~= tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  return -1
end
local new = tonumber(ARGV[2])
if new > marker then
  redis.call('HSET', KEYS[1], ARGV[1],
    string.sub(value, 1, 2) .. struct.pack('>i8', new) .. string.sub(value, 11))
end
return 1
