-- Settlement of one request (see settle_one in the prelude).
-- Mirrored by MemoryStore.settle: change both together.
-- KEYS: 1 team window tokens, 2 key window tokens, 3 leases, 4 key concurrency,
--       5 reservations, 6 reserved, 7 spend of the day, 8 spend of the month, 9 settled
-- ARGV: 1 key id, 2 request id, 3 cost (nano-USD), 4 tokens, 5 now, 6 day key ttl,
--       7 month key ttl, 8 lease key ttl, 9 how long a settlement is remembered
local k = {wtok = KEYS[1], kwtok = KEYS[2], leases = KEYS[3], kconc = KEYS[4], res = KEYS[5],
           reserved = KEYS[6], day = KEYS[7], month = KEYS[8], settled = KEYS[9]}
local now, remember = tonumber(ARGV[5]), tonumber(ARGV[9])
forget_before(k.settled, num(now - remember), 100)
local done = settle_one(k, ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), now)
if done == 1 then
  redis.call('EXPIRE', k.settled, math.ceil(remember * 2))
  touch(ARGV[8], k.leases, k.kconc, k.res, k.reserved)
  if tonumber(ARGV[3]) > 0 then
    redis.call('EXPIRE', k.day, ARGV[6])
    redis.call('EXPIRE', k.month, ARGV[7])
  end
end
return done
