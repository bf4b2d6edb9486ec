-- Usage records of one team, each stored once per request id, with its hourly and daily
-- rollups, in one step. Records leave the stream by age and count; a request id is
-- remembered for the dedupe window. Mirrored by MemoryStore.append_usage.
-- KEYS: 1 seen request ids, 2 stream, 3.. rollup hashes
-- ARGV: 1 now (ms), 2 max age (ms), 3 max records, 4 hourly rollup ttl, 5 daily rollup ttl,
--       6 dedupe window (ms), then per record: request id, record json, hour rollup index,
--       day rollup index, count of rollup fields, then that many field / amount pairs
local now_ms, max_age, max_len = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local dedupe = tonumber(ARGV[6])
local oldest = string.format('%.0f', now_ms - max_age)
forget_before(KEYS[1], '(' .. string.format('%.0f', now_ms - dedupe), 1000 + #ARGV)

-- Stream ids follow the caller's clock (as trimming does), never going backwards.
local stamp = string.format('%.0f', now_ms)
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #top > 0 then
  local top_ms = tonumber(string.match(top[1][1], '^(%d+)'))
  if top_ms > now_ms then stamp = string.format('%.0f', top_ms) end
end

-- Rollup amounts are summed here first: a batch's records mostly share their fields, so each
-- field costs the server one HINCRBY per batch instead of one per record.
local sums, ttls = {}, {}  -- key index -> {field -> amount}, key index -> ttl
local function add(index, field, amount)
  local fields = sums[index]
  if fields == nil then fields = {} sums[index] = fields end
  fields[field] = (fields[field] or 0) + amount
end

local added, i = 0, 7
while i <= #ARGV do
  local rid, record = ARGV[i], ARGV[i + 1]
  local hour, day = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local n = tonumber(ARGV[i + 4])
  if redis.call('ZADD', KEYS[1], 'NX', ARGV[1], rid) == 1 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '=', max_len, stamp .. '-*', 'r', record)
    for j = i + 5, i + 4 + 2 * n, 2 do
      local amount = tonumber(ARGV[j + 1])
      add(hour, ARGV[j], amount)
      add(day, ARGV[j], amount)
    end
    ttls[hour], ttls[day] = ARGV[4], ARGV[5]
    added = added + 1
  end
  i = i + 5 + 2 * n
end
for index, fields in pairs(sums) do
  for field, amount in pairs(fields) do redis.call('HINCRBY', KEYS[index], field, int(amount)) end
  redis.call('EXPIRE', KEYS[index], ttls[index])
end
redis.call('XTRIM', KEYS[2], 'MINID', '=', oldest)
redis.call('EXPIRE', KEYS[1], math.ceil(dedupe / 1000))
redis.call('EXPIRE', KEYS[2], math.ceil(max_age / 1000))
return added
