-- read_history: the run of deep history that holds the most of a page past a cursor, and
-- the version a fill must present.
-- KEYS[1] hist (hash: "<top>:<low>" -> run), KEYS[2] hver (string)
-- ARGV[1] a fresh random version, set when hver is missing; ARGV[2] TTL in ms;
-- ARGV[3] the cursor; ARGV[4] 'b' (before) or 'a' (after)
-- Returns {version, run} when a run covers the cursor, else {version}.
local ver = redis.call('GET', KEYS[2])
if not ver then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  ver = ARGV[1]
end
local x, before = tonumber(ARGV[3]), ARGV[4] == 'b'
local best, edge = nil, nil
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local top, low = string.match(field, '^(%-?%d+):(%-?%d+)$')
  top, low = tonumber(top), tonumber(low)
  if top then
    if before then
      -- Below x, the run reaching lowest holds the most rows.
      if low < x and x <= top and (best == nil or low < edge) then
        best, edge = field, low
      end
    elseif low <= x and x < top and (best == nil or top > edge) then
      best, edge = field, top
    end
  end
end
if best then
  return {ver, redis.call('HGET', KEYS[1], best)}
end
return {ver}
