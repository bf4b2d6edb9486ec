-- Renewal of a live concurrency lease; an expired one stays expired (its slot may be taken).
-- KEYS: 1 leases, 2 key concurrency, 3 reservations, 4 reserved
-- ARGV: 1 request id, 2 now, 3 lease ttl, 4 lease key ttl
local rid, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local expiry = redis.call('ZSCORE', KEYS[1], rid)
if not expiry or tonumber(expiry) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', num(math.max(tonumber(expiry), now + ttl)), rid)
touch(ARGV[4], KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
