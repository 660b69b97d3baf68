-- fill_members: installs a member hash read from Postgres, only if no change came in between.
-- KEYS[1] members, KEYS[2] mver
-- ARGV[1] the version read before the Postgres query, ARGV[2] TTL in ms,
-- ARGV[3..] field, value pairs, starting with the marker '_'
-- Returns 1 installed, 0 refused (the version moved).
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
