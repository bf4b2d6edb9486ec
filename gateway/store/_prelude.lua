-- Shared by the team scripts (prepended when they are loaded): number formatting and the one
-- way a concurrency lease ends. Numbers cross into redis.call as strings formatted here, because
-- Lua's own conversion keeps only 14 significant digits.
local function num(x) return string.format('%.17g', x) end
local function int(x) if x == 0 then return '0' end return string.format('%.0f', x) end  -- never '-0'
local function opt(v) if v == nil or v == cjson.null then return nil end return v end

-- A reservation: "<nanos>:<window second>:<tokens>:<windowed scopes>:<key id>", the scopes being
-- 't' (team) and/or 'k' (key) when their RPM/TPM window counted the request.
local function parse_held(held)
  local cost, second, tokens, scopes, key_id = string.match(held, '^([^:]*):([^:]*):([^:]*):([tk]*):(.*)$')
  if cost == nil then  -- written by an earlier version: "<nanos>:<key id>"
    local sep = string.find(held, ':', 1, true)
    return tonumber(string.sub(held, 1, sep - 1)), nil, 0, '', string.sub(held, sep + 1)
  end
  return tonumber(cost), second, tonumber(tokens), scopes, key_id
end

-- End a lease: free its concurrency slot and give back its budget reservation. Returns the
-- window second, reserved tokens and windowed scopes of the request, when it still held a lease.
local function release(leases, kconc, res, reserved, rid)
  local held = redis.call('HGET', res, rid)
  redis.call('ZREM', leases, rid)
  if not held then return nil end
  local cost, second, tokens, scopes, key_id = parse_held(held)
  local kfield = 'k:' .. key_id
  redis.call('HINCRBY', reserved, 'team', int(-cost))
  redis.call('HINCRBY', reserved, kfield, int(-cost))
  redis.call('HINCRBY', kconc, kfield, -1)
  redis.call('HDEL', res, rid)
  return second, tokens, scopes
end

-- Forget the oldest members scored at or before `cutoff`, at most `limit` of them: a set that
-- only remembers ids for deduplication may keep a few too long, but a burst's backlog must not
-- be deleted in one call that stalls the server.
local function forget_before(zset, cutoff, limit)
  local n = redis.call('ZCOUNT', zset, '-inf', cutoff)
  if n > 0 then redis.call('ZREMRANGEBYRANK', zset, 0, math.min(n, limit) - 1) end
end

-- Lease keys live and die together, so that a reservation never outlives its lease.
local function touch(ttl, ...)
  for _, k in ipairs({...}) do redis.call('EXPIRE', k, ttl) end
end

-- Settle one request, once per request id: end its lease (slot and reservation), charge the
-- actual cost to the UTC day and month of `now`, and true up the TPM windows with the actual
-- tokens. The cost is charged even when the lease has already expired: the money was spent.
-- k: {wtok, kwtok, leases, kconc, res, reserved, day, month, settled}. Returns 1, or 0 when the
-- request was already settled. The caller sets the expiries of the keys it names, once per call.
local function settle_one(k, key_id, rid, cost, tokens, now, remember)
  if redis.call('ZSCORE', k.settled, rid) then return 0 end
  forget_before(k.settled, num(now - remember), 100)
  redis.call('ZADD', k.settled, num(now), rid)

  local second, reserved_tokens, scopes = release(k.leases, k.kconc, k.res, k.reserved, rid)

  if cost > 0 then
    for _, field in ipairs({'team', 'k:' .. key_id}) do
      redis.call('HINCRBY', k.day, field, int(cost))
      redis.call('HINCRBY', k.month, field, int(cost))
    end
  end

  -- The window keeps the reserved tokens in the second of admission until the actual count is
  -- known; a second already out of the window has nothing left to correct.
  if second ~= nil then
    local delta = int(tokens - reserved_tokens)
    for scope, wtok in pairs({t = k.wtok, k = k.kwtok}) do
      if string.find(scopes, scope, 1, true) and redis.call('HEXISTS', wtok, 't:' .. second) == 1 then
        redis.call('HINCRBY', wtok, 't:' .. second, delta)
        redis.call('HINCRBY', wtok, '_sum', delta)
      end
    end
  end
  return 1
end
