-- append: write-through of a post. Appends only onto an existing, whole window whose seq
-- is the one just before the post's; else drops the window (never guesses).
-- KEYS[1] msgs, KEYS[2] meta, KEYS[3] ver
-- ARGV[1] the post's seq, ARGV[2] its list element, ARGV[3] hot window size,
-- ARGV[4] TTL in ms, ARGV[5] fmt
-- Returns 1 appended, 0 no window, 2 already applied (a replay), -1 window dropped.
-- The opening checks are the same as in rewrite.lua: Redis loads each script on its own,
-- so they cannot share code (Redis Functions could, from 7.0). Keep both in step.
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
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
local floor, complete = tonumber(m[3]), m[5]
redis.call('LPUSH', KEYS[1], ARGV[2])
count = count + 1
if count > tonumber(ARGV[3]) then
  -- The oldest message leaves the window: changes at or below its seq are no longer all here.
  local _, oldest_seq = struct.unpack('>i8i8', redis.call('RPOP', KEYS[1]), 3)
  count = count - 1
  complete = '0'
  if oldest_seq > floor then
    floor = oldest_seq
  end
end
redis.call('HSET', KEYS[2], 'seq', seq, 'count', count, 'floor', floor, 'complete', complete)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
