-- fill_history: installs a run of deep history read from Postgres, only if no edit or
-- delete of the channel came in between; keeps at most ARGV[5] runs (the newest tops,
-- where pagers start, besides the new one).
-- KEYS[1] hist, KEYS[2] hver
-- ARGV[1] the version read before the Postgres query, ARGV[2] TTL in ms,
-- ARGV[3] the field "<top>:<low>", ARGV[4] the run, ARGV[5] most runs kept
-- Returns 1 installed, 0 refused (the version moved).
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
local fields = redis.call('HKEYS', KEYS[1])
local most = tonumber(ARGV[5])
if #fields > most then
  local others = {}
  for _, field in ipairs(fields) do
    if field ~= ARGV[3] then
      table.insert(others, {tonumber(string.match(field, '^(%-?%d+)')) or 0, field})
    end
  end
  table.sort(others, function(a, b) return a[1] > b[1] end)
  for i = most, #others do
    redis.call('HDEL', KEYS[1], others[i][2])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
