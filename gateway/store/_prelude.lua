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
