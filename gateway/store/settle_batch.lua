-- Settlement of a batch of one team's requests in one call (see settle_one in the prelude), once
-- per batch id: a batch whose mark is in the team's set of batches was settled before (its
-- writer did not hear back and a spill file replayed it) and is skipped whole.
-- Mirrored by MemoryStore.write_batch: change both together.
-- KEYS: 1 team window tokens, 2 leases, 3 key concurrency, 4 reservations, 5 reserved,
--       6 abandoned, 7 batches, then every key window and spend key the batch names (by position).
-- ARGV: 1 lease key ttl, 2 batch id ('' for none: not marked), 3 batch marks cutoff, 4 marks
--       kept, 5 JSON array of settlements [key id, request id, cost (nano-USD), tokens,
--       day key ttl, month key ttl, key window position, day position, month position]
-- Returns the number of requests settled (0 for a batch settled before).
local lease_key_ttl, batch_id = ARGV[1], ARGV[2]
local mark = batch_id .. ':s'
if batch_id ~= '' and redis.call('ZSCORE', KEYS[7], mark) then return 0 end
local batch = cjson.decode(ARGV[5])
local settled = 0
local spend_ttl = {}  -- key position -> the longest ttl the batch asks for
for _, s in ipairs(batch) do
  local k = {wtok = KEYS[1], kwtok = KEYS[s[7]], leases = KEYS[2], kconc = KEYS[3], res = KEYS[4],
             reserved = KEYS[5], day = KEYS[s[8]], month = KEYS[s[9]], abandoned = KEYS[6]}
  local done = settle_one(k, s[1], s[2], s[3], s[4])
  settled = settled + done
  if done == 1 and s[3] > 0 then
    spend_ttl[s[8]] = math.max(spend_ttl[s[8]] or 0, s[5])
    spend_ttl[s[9]] = math.max(spend_ttl[s[9]] or 0, s[6])
  end
end
if batch_id ~= '' then mark_batch(KEYS[7], mark, ARGV[3], tonumber(ARGV[4])) end
if settled > 0 then
  touch(lease_key_ttl, KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  for position, ttl in pairs(spend_ttl) do redis.call('EXPIRE', KEYS[position], ttl) end
end
return settled
