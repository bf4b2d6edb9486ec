-- Shared by the team scripts (prepended when they are loaded): number formatting and the one
-- way a concurrency lease ends. Numbers cross into redis.call as strings formatted here, because
-- Lua's own conversion keeps only 14 significant digits.
local function num(x) return string.format('%.17g', x) end
local function int(x) if x == 0 then return '0' end return string.format('%.0f', x) end  -- never '-0'
local function opt(v) if v == nil or v == cjson.null then return nil end return v end

-- End a lease: free its concurrency slot and give back its budget reservation.
local function release(leases, kconc, res, reserved, rid)
  local held = redis.call('HGET', res, rid)
  if held then
    local sep = string.find(held, ':', 1, true)
    local cost = tonumber(string.sub(held, 1, sep - 1))
    local kfield = 'k:' .. string.sub(held, sep + 1)
    redis.call('HINCRBY', reserved, 'team', int(-cost))
    redis.call('HINCRBY', reserved, kfield, int(-cost))
    redis.call('HINCRBY', kconc, kfield, -1)
    redis.call('HDEL', res, rid)
  end
  redis.call('ZREM', leases, rid)
end

-- Lease keys live and die together, so that a reservation never outlives its lease.
local function touch(ttl, ...)
  for _, k in ipairs({...}) do redis.call('EXPIRE', k, ttl) end
end

-- Settle one request, once per request id: end its lease (slot and reservation), charge the
-- actual cost to the UTC day and month of `now`, and true up the TPM windows with the actual
-- tokens. The cost is charged even when the lease has already expired: the money was spent.
-- k: {wtok, kwtok, leases, kconc, res, reserved, day, month, settled}. Returns 1, or 0 when the
-- request was already settled.
local function settle_one(k, key_id, rid, cost, tokens, now, day_ttl, month_ttl, lease_key_ttl, remember)
  if redis.call('ZSCORE', k.settled, rid) then return 0 end
  redis.call('ZREMRANGEBYSCORE', k.settled, '-inf', num(now - remember))
  redis.call('ZADD', k.settled, num(now), rid)
  redis.call('EXPIRE', k.settled, math.ceil(remember * 2))

  release(k.leases, k.kconc, k.res, k.reserved, rid)
  touch(lease_key_ttl, k.leases, k.kconc, k.res, k.reserved)

  if cost > 0 then
    for _, field in ipairs({'team', 'k:' .. key_id}) do
      redis.call('HINCRBY', k.day, field, int(cost))
      redis.call('HINCRBY', k.month, field, int(cost))
    end
    redis.call('EXPIRE', k.day, day_ttl)
    redis.call('EXPIRE', k.month, month_ttl)
  end

  for _, wtok in ipairs({k.wtok, k.kwtok}) do
    local prev = redis.call('HGET', wtok, 'r:' .. rid)
    if prev then
      redis.call('HSET', wtok, 'r:' .. rid, int(tokens))
      redis.call('HINCRBY', wtok, '_sum', int(tokens - tonumber(prev)))
    end
  end
  return 1
end
