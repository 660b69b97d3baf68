-- fill_window: installs a window read from Postgres, only if no write came in between.
-- KEYS[1] msgs, KEYS[2] meta, KEYS[3] ver
-- ARGV[1] the version read before the Postgres query, ARGV[2] TTL in ms,
-- ARGV[3] seq, ARGV[4] floor, ARGV[5] complete (0|1), ARGV[6] channel blob, ARGV[7] fmt,
-- ARGV[8..] list elements, newest first
-- Returns 1 installed, 0 refused (the version moved).
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
local count = #ARGV - 7
if count > 0 then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 8))
end
redis.call('HSET', KEYS[2], 'seq', ARGV[3], 'floor', ARGV[4], 'complete', ARGV[5],
  'count', count, 'chan', ARGV[6], 'fmt', ARGV[7])
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
