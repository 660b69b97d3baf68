-- read_feed: a user's hot feed (event ids, newest first), or the fence version to fill it.
-- KEYS[1] feed, KEYS[2] fmeta, KEYS[3] fver
-- ARGV[1] a fresh random version, ARGV[2] TTL in ms, ARGV[3] fmt
-- Returns {1, complete, seen, ids} on a hit, {0, version} on a miss. A feed whose list
-- length differs from `count` (Redis evicted part of it), whose `fmt` is another build's,
-- or that has no version is a miss; the next fill replaces it.
local m = redis.call('HMGET', KEYS[2], 'count', 'complete', 'fmt', 'seen')
-- Without its version (expired or evicted alone), a feed may have missed deliveries:
-- writers skip users who have no version.
if m[1] and m[3] == ARGV[3] and redis.call('EXISTS', KEYS[3]) == 1 then
  local ids = redis.call('LRANGE', KEYS[1], 0, -1)
  if #ids == tonumber(m[1]) then
    -- A read keeps the three keys alive together: the version outlives every copy of
    -- the feed held in an L1 (writers invalidate only users who have a version).
    for i = 1, 3 do
      redis.call('PEXPIRE', KEYS[i], ARGV[2])
    end
    return {1, m[2], m[4] or '', ids}
  end
end
redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2])
return {0, redis.call('GET', KEYS[3])}
