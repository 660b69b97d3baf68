-- rewrite: write-through of an edit or a soft delete. Replaces the message in place when
-- it is in the window; a message older than the window only raises the floor.
-- It also drops the runs of deep history whose range holds the message, and fences their
-- fills (read_history.lua).
-- KEYS[1] msgs, KEYS[2] meta, KEYS[3] ver, KEYS[4] hist, KEYS[5] hver
-- ARGV[1] the change's seq, ARGV[2] message id, ARGV[3] the new list element,
-- ARGV[4] TTL in ms, ARGV[5] fmt
-- Returns 1 applied, 0 no window, 2 already applied (a replay), -1 window dropped.
-- The opening checks are the same as in append.lua: Redis loads each script on its own,
-- so they cannot share code (Redis Functions could, from 7.0). Keep both in step.
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('INCR', KEYS[5])
redis.call('PEXPIRE', KEYS[5], ARGV[4])
local changed = tonumber(ARGV[2])
for _, field in ipairs(redis.call('HKEYS', KEYS[4])) do
  local top, low = string.match(field, '^(%-?%d+):(%-?%d+)$')
  if top and tonumber(low) <= changed and changed < tonumber(top) then
    redis.call('HDEL', KEYS[4], field)
  end
end
local m = redis.call('HMGET', KEYS[2], 'seq', 'count', 'floor', 'fmt', 'complete')
if not m[1] then
  return 0
end
local seq, cached, count = tonumber(ARGV[1]), tonumber(m[1]), tonumber(m[2])
if m[4] ~= ARGV[5] or redis.call('LLEN', KEYS[1]) ~= count then
  redis.call('DEL', KEYS[1], KEYS[2])
  return -1
end
if cached >= seq then
  return 2
end
if cached ~= seq - 1 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return -1
end
local id, floor = tonumber(ARGV[2]), tonumber(m[3])
local elements = redis.call('LRANGE', KEYS[1], 0, -1)
local at = nil
for i, element in ipairs(elements) do
  if struct.unpack('>i8', element, 3) == id then
    at = i - 1
    break
  end
end
if at then
  redis.call('LSET', KEYS[1], at, ARGV[3])
else
  local oldest = nil
  if count > 0 then
    oldest = struct.unpack('>i8', elements[count], 3)
  end
  if m[5] == '1' or oldest == nil or id > oldest then
    -- A whole window must hold every message of the channel at or after its oldest.
    redis.call('DEL', KEYS[1], KEYS[2])
    return -1
  end
  if seq > floor then
    floor = seq
  end
end
redis.call('HSET', KEYS[2], 'seq', seq, 'floor', floor)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
