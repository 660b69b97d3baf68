-- store_page: keeps an encoded page beside the window it was made from, in the window's
-- meta hash, so that the next reader of that page gets it whole (read_window.lua) with no
-- decode of messages and no encode. Every write that changes the window raises its seq
-- or deletes the hash, so a page made at an older seq is never served (the reader checks
-- the seq stored in front of it) and is overwritten by the next one stored.
-- KEYS[1] meta
-- ARGV[1] the seq of the window the page was made from, ARGV[2] the page's field,
-- ARGV[3] the value: that seq (i64, big endian) then the page
-- Returns 1 stored, 0 the window changed (or is gone) since it was read.
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
