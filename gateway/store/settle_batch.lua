-- Settlement of a batch of one team's requests in one call, once per batch id: a batch whose
-- mark is in the team's set of batches was settled before (its writer did not hear back and a
-- spill file replayed it) and is skipped whole.
-- Settling a request ends its lease (slot and reservation), charges the actual cost to the UTC
-- day and month the caller chose, and trues up the TPM windows with the actual tokens. The cost
-- is charged even when the lease has already expired: the money was spent. A request whose
-- lease was charged as abandoned (admit.lua) is not charged again. Repeats are kept out per
-- batch, not per request: a request named twice in a batch is charged twice.
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

-- The batch's changes to counters are summed (see add_to_sums), which is right since nothing
-- the loop reads is changed by those writes.
local sums, order = {}, {}

-- Whether a window still has the second a reservation counted its tokens in (a second out of
-- the window has nothing left to correct): asked once per window and second, since settling
-- only increments fields that exist and never adds or removes one.
local seconds_known = {}
local function window_has(wtok, field)
  local known = seconds_known[wtok]
  if known == nil then known = {} seconds_known[wtok] = known end
  if known[field] == nil then known[field] = redis.call('HEXISTS', wtok, field) == 1 end
  return known[field]
end

local rids = {}
for i, s in ipairs(batch) do rids[i] = s[2] end
local abandoned = read_fields(KEYS[6], rids)
local holding = read_fields(KEYS[4], rids)

local settled = 0
local leases_ended, reservations_ended = {}, {}  -- request ids, for one ZREM and one HDEL
local released = {}  -- request id -> true once its reservation has ended in this batch
local spend_ttl = {}  -- key position -> the longest ttl the batch asks for
for i, s in ipairs(batch) do
  local key_id, rid, cost, tokens = s[1], s[2], s[3], s[4]
  if not abandoned[i] then
    settled = settled + 1
    leases_ended[#leases_ended + 1] = rid
    local held = not released[rid] and holding[i]
    if held then  -- as release() in the prelude does, for one request
      released[rid] = true
      reservations_ended[#reservations_ended + 1] = rid
      local reserved_cost, second, reserved_tokens, scopes, holder = parse_held(held)
      add_to_sums(sums, order, KEYS[5], 'team', -reserved_cost)
      add_to_sums(sums, order, KEYS[5], 'k:' .. holder, -reserved_cost)
      add_to_sums(sums, order, KEYS[3], 'k:' .. holder, -1)
      -- The window keeps the reserved tokens in the second of admission until the actual count
      -- is known.
      if second ~= nil then
        local field, delta = 't:' .. second, tokens - reserved_tokens
        for scope, wtok in pairs({t = KEYS[1], k = KEYS[s[7]]}) do
          if string.find(scopes, scope, 1, true) and window_has(wtok, field) then
            add_to_sums(sums, order, wtok, field, delta)
            add_to_sums(sums, order, wtok, '_sum', delta)
          end
        end
      end
    end
    if cost > 0 then
      for _, field in ipairs({'team', 'k:' .. key_id}) do
        add_to_sums(sums, order, KEYS[s[8]], field, cost)
        add_to_sums(sums, order, KEYS[s[9]], field, cost)
      end
      spend_ttl[s[8]] = math.max(spend_ttl[s[8]] or 0, s[5])
      spend_ttl[s[9]] = math.max(spend_ttl[s[9]] or 0, s[6])
    end
  end
end

for first = 1, #leases_ended, 1000 do
  redis.call('ZREM', KEYS[2], unpack(leases_ended, first, math.min(first + 999, #leases_ended)))
end
for first = 1, #reservations_ended, 1000 do
  redis.call('HDEL', KEYS[4], unpack(reservations_ended, first, math.min(first + 999, #reservations_ended)))
end
write_sums(sums, order)
if batch_id ~= '' then mark_batch(KEYS[7], mark, ARGV[3], tonumber(ARGV[4])) end
if settled > 0 then
  touch(lease_key_ttl, KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  for position, ttl in pairs(spend_ttl) do redis.call('EXPIRE', KEYS[position], ttl) end
end
return settled
