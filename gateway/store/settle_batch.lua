-- Settlement of a batch of one team's requests in one call (see settle_one in the prelude).
-- Mirrored by MemoryStore.settle: change both together.
-- KEYS: 1 team window tokens, 2 leases, 3 key concurrency, 4 reservations, 5 reserved,
--       6 settled, then every key window and spend key the batch names (by position).
-- ARGV: 1 lease key ttl, 2 how long a settlement is remembered, 3 JSON array of settlements
--       [key id, request id, cost (nano-USD), tokens, now, day key ttl, month key ttl,
--        key window position, day position, month position]
local lease_key_ttl, remember = ARGV[1], tonumber(ARGV[2])
local batch = cjson.decode(ARGV[3])
local settled = 0
local spend_ttl = {}  -- key position -> the longest ttl the batch asks for
for _, s in ipairs(batch) do
  local k = {wtok = KEYS[1], kwtok = KEYS[s[8]], leases = KEYS[2], kconc = KEYS[3], res = KEYS[4],
             reserved = KEYS[5], day = KEYS[s[9]], month = KEYS[s[10]], settled = KEYS[6]}
  local done = settle_one(k, s[1], s[2], s[3], s[4], s[5], remember)
  settled = settled + done
  if done == 1 and s[3] > 0 then
    spend_ttl[s[9]] = math.max(spend_ttl[s[9]] or 0, s[6])
    spend_ttl[s[10]] = math.max(spend_ttl[s[10]] or 0, s[7])
  end
end
if settled > 0 then
  redis.call('EXPIRE', KEYS[6], math.ceil(remember * 2))
  touch(lease_key_ttl, KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  for position, ttl in pairs(spend_ttl) do redis.call('EXPIRE', KEYS[position], ttl) end
end
return settled
