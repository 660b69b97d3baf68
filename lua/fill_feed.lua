-- fill_feed: installs a user's hot feed read from Postgres, only if no delivery or seen
-- marker came in between (the version is unchanged).
-- KEYS[1] feed, KEYS[2] fmeta, KEYS[3] fver
-- ARGV[1] the version read before the Postgres query, ARGV[2] TTL in ms,
-- ARGV[3] complete (0|1), ARGV[4] seen marker ('' for none), ARGV[5] fmt,
-- ARGV[6..] event ids, newest first
-- Returns 1 installed, 0 refused.
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
local count = #ARGV - 5
local top = '0'
if count > 0 then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 6))
  top = ARGV[6]
end
redis.call('HSET', KEYS[2], 'top', top, 'count', count, 'complete', ARGV[3],
  'seen', ARGV[4], 'fmt', ARGV[5])
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
