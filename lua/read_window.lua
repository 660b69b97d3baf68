-- read_window: a channel's window in one round trip, or the version a fill must present;
-- with a page's field, that page when it was stored for the window as it is now.
-- KEYS[1] msgs (list), KEYS[2] meta (hash), KEYS[3] ver (string)
-- ARGV[1] a fresh random version, set when ver is missing; ARGV[2] TTL in ms;
-- ARGV[3] the index of the last element wanted (-1: all; n: the newest n + 1 only);
-- ARGV[4] the meta field of a stored page ('' for none; see store_page.lua)
-- Returns {2, the stored page} when it was made at the window's seq;
--         {1, {seq, floor, complete, count, chan, fmt}, elements newest first} on a hit;
--         {0, version} on a miss.
-- The miss is the same as in read_members.lua: Redis loads each script on its own, so
-- they cannot share code (Redis Functions could, from 7.0). Keep both in step.
local m = redis.call('HMGET', KEYS[2], 'seq', 'floor', 'complete', 'count', 'chan', 'fmt',
  ARGV[4])
if m[1] then
  local page = m[7]
  if page and struct.unpack('>i8', page) == tonumber(m[1]) then
    return {2, page}
  end
  m[7] = nil
  return {1, m, redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[3]))}
end
local ver = redis.call('GET', KEYS[3])
if not ver then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
  ver = ARGV[1]
end
return {0, ver}
