-- Settlement of a batch of one team's requests in one call (see settle_one in the prelude).
-- KEYS: 1 team window tokens, 2 leases, 3 key concurrency, 4 reservations, 5 reserved,
--       6 settled, then every key window and spend key the batch names (by position).
-- ARGV: 1 lease key ttl, 2 how long a settlement is remembered, 3 JSON array of settlements
--       [key id, request id, cost (nano-USD), tokens, now, day key ttl, month key ttl,
--        key window position, day position, month position]
local lease_key_ttl, remember = ARGV[1], tonumber(ARGV[2])
local settled = 0
for _, s in ipairs(cjson.decode(ARGV[3])) do
  local k = {wtok = KEYS[1], kwtok = KEYS[s[8]], leases = KEYS[2], kconc = KEYS[3], res = KEYS[4],
             reserved = KEYS[5], day = KEYS[s[9]], month = KEYS[s[10]], settled = KEYS[6]}
  settled = settled + settle_one(k, s[1], s[2], s[3], s[4], s[5], s[6], s[7], lease_key_ttl, remember)
end
return settled
