-- drop_channel: forgets everything cached of a channel and fences in-flight fills
-- (admin flush, and channels written while Redis was unreachable).
-- KEYS[1] msgs, KEYS[2] meta, KEYS[3] ver, KEYS[4] members, KEYS[5] mver, KEYS[6] hist,
-- KEYS[7] hver
-- ARGV[1] TTL in ms
-- Returns 1.
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4], KEYS[6])
for _, key in ipairs({KEYS[3], KEYS[5], KEYS[7]}) do
  redis.call('INCR', key)
  redis.call('PEXPIRE', key, ARGV[1])
end
return 1
