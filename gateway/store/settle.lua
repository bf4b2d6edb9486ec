-- Settlement of one request, once per request id: end its lease (slot and reservation), charge
-- the actual cost to the UTC day and month of `now`, and true up the TPM windows with the actual
-- tokens. The cost is charged even when the lease has already expired: the money was spent.
-- Mirrored by MemoryStore.settle: change both together.
-- KEYS: 1 team window tokens, 2 key window tokens, 3 leases, 4 key concurrency,
--       5 reservations, 6 reserved, 7 spend of the day, 8 spend of the month, 9 settled
-- ARGV: 1 key id, 2 request id, 3 cost (nano-USD), 4 tokens, 5 now, 6 day key ttl,
--       7 month key ttl, 8 lease key ttl, 9 how long a settlement is remembered
local key_id, rid = ARGV[1], ARGV[2]
local cost, tokens, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local remember = tonumber(ARGV[9])

if redis.call('ZSCORE', KEYS[9], rid) then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', num(now - remember))
redis.call('ZADD', KEYS[9], num(now), rid)
redis.call('EXPIRE', KEYS[9], math.ceil(remember * 2))

release(KEYS[3], KEYS[4], KEYS[5], KEYS[6], rid)
touch(ARGV[8], KEYS[3], KEYS[4], KEYS[5], KEYS[6])

if cost > 0 then
  for _, field in ipairs({'team', 'k:' .. key_id}) do
    redis.call('HINCRBY', KEYS[7], field, int(cost))
    redis.call('HINCRBY', KEYS[8], field, int(cost))
  end
  redis.call('EXPIRE', KEYS[7], ARGV[6])
  redis.call('EXPIRE', KEYS[8], ARGV[7])
end

for _, wtok in ipairs({KEYS[1], KEYS[2]}) do
  local prev = redis.call('HGET', wtok, 'r:' .. rid)
  if prev then
    redis.call('HSET', wtok, 'r:' .. rid, int(tokens))
    redis.call('HINCRBY', wtok, '_sum', int(tokens - tonumber(prev)))
  end
end
return 1
