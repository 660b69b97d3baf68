-- drop_members: write-through of a membership change (add, remove, role): the member hash
-- is dropped rather than patched, since two changes may reach Redis out of commit order.
-- KEYS[1] members, KEYS[2] mver
-- ARGV[1] TTL in ms
-- Returns 1.
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
