-- raise_position: the WAL position of a write, beside the fences of what it changed, so
-- that no fill from a read replica that has not replayed it is made (API.md promise 8).
-- Only raised, never lowered: two instances' writes may arrive in either order.
-- KEYS[1] the scope's position key
-- ARGV[1] the position, 16 hex digits (fixed width: strings compare as the numbers do),
-- ARGV[2] TTL in ms
-- Returns 1 raised, 0 already at or past it.
local known = redis.call('GET', KEYS[1])
if known and known >= ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
