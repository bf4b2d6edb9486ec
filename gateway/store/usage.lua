-- Usage records of one team, each taken once per request id: its hourly and daily rollups, and
-- the record into the team's buffer stream, which the record store's drainers read through a
-- consumer group (made with the stream) and empty once their database has committed it. A full
-- buffer takes no more: the script stops at the first new record that does not fit and says how
-- far it went, and the caller keeps the rest (spill file) until the drainers catch up. A request
-- id is remembered for the dedupe window. Mirrored by MemoryStore.append_usage (no buffer there).
-- KEYS: 1 seen request ids, 2 buffer stream, 3.. rollup hashes
-- ARGV: 1 now (ms), 2 consumer group, 3 buffer bound (records), 4 hourly rollup ttl,
--       5 daily rollup ttl, 6 dedupe window (ms), then per record: request id, record json,
--       hour rollup index, day rollup index, count of rollup fields, then that many field /
--       amount pairs
-- Returns {records added, records taken (added, or seen before)}.
local dedupe = tonumber(ARGV[6])
forget_before(KEYS[1], '(' .. string.format('%.0f', tonumber(ARGV[1]) - dedupe), 1000 + #ARGV)
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[2], '0', 'MKSTREAM')
else
  -- A buffer is emptied by its drainers, never by time (earlier versions kept records in this
  -- stream with an expiry: it must not take undrained records with it).
  redis.call('PERSIST', KEYS[2])
end
local room = tonumber(ARGV[3]) - redis.call('XLEN', KEYS[2])

-- Rollup amounts are summed here first: a batch's records mostly share their fields, so each
-- field costs the server one HINCRBY per batch instead of one per record.
local sums, ttls = {}, {}  -- key index -> {field -> amount}, key index -> ttl
local function add(index, field, amount)
  local fields = sums[index]
  if fields == nil then fields = {} sums[index] = fields end
  fields[field] = (fields[field] or 0) + amount
end

local added, taken, i = 0, 0, 7
while i <= #ARGV do
  local rid, record = ARGV[i], ARGV[i + 1]
  local hour, day = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local n = tonumber(ARGV[i + 4])
  if room <= 0 then
    if redis.call('ZSCORE', KEYS[1], rid) == false then break end
  elseif redis.call('ZADD', KEYS[1], 'NX', ARGV[1], rid) == 1 then
    redis.call('XADD', KEYS[2], '*', 'r', record)
    room = room - 1
    for j = i + 5, i + 4 + 2 * n, 2 do
      local amount = tonumber(ARGV[j + 1])
      add(hour, ARGV[j], amount)
      add(day, ARGV[j], amount)
    end
    ttls[hour], ttls[day] = ARGV[4], ARGV[5]
    added = added + 1
  end
  taken = taken + 1
  i = i + 5 + 2 * n
end
for index, fields in pairs(sums) do
  for field, amount in pairs(fields) do redis.call('HINCRBY', KEYS[index], field, int(amount)) end
  redis.call('EXPIRE', KEYS[index], ttls[index])
end
redis.call('EXPIRE', KEYS[1], math.ceil(dedupe / 1000))
return {added, taken}
