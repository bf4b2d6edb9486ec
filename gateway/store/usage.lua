-- Usage records of one team: its hourly and daily rollups, and the record into the team's buffer
-- stream, which the record store's drainers read through a consumer group (made with the stream)
-- and empty once their database has committed it. A full buffer takes no more: the script stops
-- at the first record that does not fit and says how far it went, and the caller keeps the rest
-- (spill file) until the drainers catch up. Once per batch id: the team's set of batches keeps
-- '<batch id>:u:<records taken>', and the same batch again (a replay of a batch whose writer did
-- not hear back) takes only the records after those. Mirrored by MemoryStore.write_batch
-- (no buffer there).
-- KEYS: 1 buffer stream, 2 batches, 3.. rollup hashes
-- ARGV: 1 consumer group, 2 buffer bound (records), 3 hourly rollup ttl, 4 daily rollup ttl,
--       5 batch id ('' for none: not marked), 6 batch marks cutoff, 7 marks kept, then per
--       record: record json, hour rollup index, day rollup index, count of rollup fields, then
--       that many field / amount pairs
-- Returns {records added, records taken (added now, or by this batch before)}.
local batch_id = ARGV[5]
local before, done = nil, 0
if batch_id ~= '' then
  local found = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. batch_id .. ':u:', '(' .. batch_id .. ':u;', 'LIMIT', 0, 1)
  if #found > 0 then
    before = found[1]
    done = tonumber(string.sub(before, #batch_id + 4))
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
else
  -- A buffer is emptied by its drainers, never by time (earlier versions kept records in this
  -- stream with an expiry: it must not take undrained records with it).
  redis.call('PERSIST', KEYS[1])
end
local room = tonumber(ARGV[2]) - redis.call('XLEN', KEYS[1])

-- Rollup amounts are summed here first (add_to_sums): a batch's records mostly share their
-- fields, so each field costs the server one HINCRBY per batch instead of one per record.
local sums, order, ttls = {}, {}, {}  -- ttls: key index -> ttl, for the rollups written

local added, taken, i = 0, 0, 8
while i <= #ARGV do
  local n = tonumber(ARGV[i + 3])
  if taken >= done then
    if room <= 0 then break end
    local hour, day = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    redis.call('XADD', KEYS[1], '*', 'r', ARGV[i])
    room = room - 1
    local hour_rollup, day_rollup = KEYS[hour], KEYS[day]
    for j = i + 4, i + 3 + 2 * n, 2 do
      local field, amount = ARGV[j], tonumber(ARGV[j + 1])
      add_to_sums(sums, order, hour_rollup, field, amount)
      add_to_sums(sums, order, day_rollup, field, amount)
    end
    if n > 0 then ttls[hour], ttls[day] = ARGV[3], ARGV[4] end
    added = added + 1
  end
  taken = taken + 1
  i = i + 4 + 2 * n
end
write_sums(sums, order)
for index, ttl in pairs(ttls) do redis.call('EXPIRE', KEYS[index], ttl) end
if batch_id ~= '' and added > 0 then
  if before then redis.call('ZREM', KEYS[2], before) end
  mark_batch(KEYS[2], batch_id .. ':u:' .. taken, ARGV[6], tonumber(ARGV[7]))
end
return {added, taken}
