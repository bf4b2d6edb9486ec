-- Admission of one request: key still valid, model allowed, RPM, TPM, a concurrency lease and
-- the daily and monthly budget reservation, for the team and for the key. All or nothing: Redis
-- does not roll a script back, so the arguments are checked first, every check comes before the
-- first write, and the writes (bounded integers into integer counters) cannot fail. Expired
-- state (leases whose holder died, window seconds that left the window) is counted out while
-- checking and deleted with the writes.
-- Returns the verdict, retry hint, the requests and tokens header triples, what a refusing
-- budget has left (nano-USD), and 1 when a budget applies to the request (team's or key's).
-- Mirrored by MemoryStore.admit: change both together.
-- KEYS: 1 team record, 2 key record, 3 team window, 4 team window tokens, 5 key window,
--       6 key window tokens, 7 leases, 8 key concurrency, 9 reservations, 10 reserved,
--       11 spend of the day, 12 spend of the month, 13 abandoned
-- ARGV: 1 key id, 2 request id, 3 tokens, 4 cost (nano-USD), 5 models (newline-separated), 6 now,
--       7 next UTC day start, 8 next UTC month start, 9 lease ttl, 10 window, 11 lease key ttl,
--       12 retry hint when the concurrency is full, 13 rate only: 1 counts the request against
--       RPM alone (token counting), with no TPM, concurrency or budget check and no lease,
--       14 how long an abandoned reservation is kept
local key_id, rid, model = ARGV[1], ARGV[2], ARGV[5]
local tokens, cost, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local next_day, next_month = tonumber(ARGV[7]), tonumber(ARGV[8])
local lease_ttl, window, lease_key_ttl = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]
local concurrency_wait = tonumber(ARGV[12])
local rate_only = ARGV[13] == '1'
local abandoned_ttl = tonumber(ARGV[14])
local kfield = 'k:' .. key_id

-- Whole numbers below 2^53 stay exact in Lua's doubles and in Redis' 64-bit counters.
local function whole(x) return x ~= nil and x >= 0 and x < 2^53 and x == math.floor(x) end
local function finite(x) return x ~= nil and x == x and x > -2^53 and x < 2^53 end
local function invalid_argument()
  if not whole(tokens) then return 'tokens' end
  if not whole(cost) then return 'cost' end
  if not (finite(now) and now > 0) then return 'now' end
  if not finite(next_day) then return 'next day' end
  if not finite(next_month) then return 'next month' end
  if not finite(lease_ttl) then return 'lease ttl' end
  if not (finite(window) and window > 0) then return 'window' end
  if not whole(tonumber(lease_key_ttl)) then return 'lease key ttl' end
  if not finite(concurrency_wait) then return 'concurrency wait' end
  if not whole(abandoned_ttl) then return 'abandoned ttl' end
  if key_id == '' then return 'key id' end
  if rid == '' then return 'request id' end
  if model == '' then return 'model' end
end
local invalid = invalid_argument()
if invalid then return redis.error_reply('ERR admit: invalid ' .. invalid) end

local function out(v) if v == nil then return '' end return num(v) end
local budgeted = false
local function verdict(admitted, reason, retry, req, tok, budget_left)
  req = req or {}
  tok = tok or {}
  return {admitted and 1 or 0, reason or '', out(retry), out(req[1]), out(req[2]), out(req[3]),
          out(tok[1]), out(tok[2]), out(tok[3]), out(budget_left), budgeted and 1 or 0}
end

local team_raw = redis.call('GET', KEYS[1])
local key_raw = redis.call('GET', KEYS[2])
if not team_raw or not key_raw then return verdict(false, 'revoked') end
local team = cjson.decode(team_raw).limits
local keyrec = cjson.decode(key_raw)
if keyrec.revoked == true then return verdict(false, 'revoked') end
local expires = opt(keyrec.expires_at)
if expires ~= nil and expires <= now then return verdict(false, 'expired') end
local key = keyrec.limits

local function allows(models)
  if models == nil then return true end
  for wanted in string.gmatch(model, '[^\n]+') do
    local found = false
    for _, m in ipairs(models) do if m == wanted then found = true break end end
    if not found then return false end
  end
  return true
end
if not allows(opt(team.allowed_models)) or not allows(opt(key.allowed_models)) then
  return verdict(false, 'model_not_allowed')
end

-- Expired leases (a replica died, or nobody settled) give back their slot. Their reservation is
-- abandoned, not freed: the upstream may have served and billed the request, so it is charged as
-- spend at its reserved amount (the most it could have cost) and kept in the abandoned hash; a
-- settlement arriving later is then a duplicate (settle_batch.lua). A lease still holding its
-- reservation was never settled: a settlement ends the lease and its reservation together. Budgets see no change (reserved becomes spent);
-- the release and the charge are written with the other writes, after every check.
local expired = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', ARGV[6])  -- now, as the caller wrote it
local freed_leases, freed_kconc = #expired, 0  -- what releasing them gives back
local own_lease_expired = false
local abandoned = {}  -- {request id, cost, holder key id}
for _, r in ipairs(expired) do
  if r == rid then own_lease_expired = true end
  local held = redis.call('HGET', KEYS[9], r)
  if held then
    local cost, _, _, _, holder = parse_held(held)
    if holder == key_id then freed_kconc = freed_kconc + 1 end
    abandoned[#abandoned + 1] = {r, cost, holder}
  end
end

-- Sliding windows, counted per second: the requests of second b count while b > now - window,
-- so a window holds at most one entry per second whatever the request rate, and purging after
-- a burst costs at most a window's worth of seconds. Seconds out of the window are counted out
-- here and deleted with the other writes.
local second = string.format('%d', math.floor(now))
local cutoff = now - window  -- a bound only: passed as a number (see the prelude)
local window_key_ttl = int(math.ceil(window * 2))
local function stale(win, wtok)
  local old = redis.call('ZRANGEBYSCORE', win, '-inf', cutoff)
  local fields, count, sum = {}, 0, 0
  if #old > 0 then
    for _, b in ipairs(old) do
      fields[#fields + 1] = 'c:' .. b
      fields[#fields + 1] = 't:' .. b
    end
    local values = redis.call('HMGET', wtok, unpack(fields))
    for i = 1, #values, 2 do
      count = count + tonumber(values[i] or '0')
      sum = sum + tonumber(values[i + 1] or '0')
    end
  end
  return fields, count, sum
end

local scopes = {
  {limits = team, win = KEYS[3], wtok = KEYS[4], field = 'team'},
  {limits = key, win = KEYS[5], wtok = KEYS[6], field = kfield},
}
for _, s in ipairs(scopes) do
  s.rpm, s.tpm = opt(s.limits.rpm), opt(s.limits.tpm)
  s.windowed = s.rpm ~= nil or s.tpm ~= nil
  if s.windowed then
    s.stale, s.stale_count, s.stale_sum = stale(s.win, s.wtok)
    local totals = redis.call('HMGET', s.wtok, '_count', '_sum')
    s.count = tonumber(totals[1] or '0') - s.stale_count
    s.sum = tonumber(totals[2] or '0') - s.stale_sum
  end
end

-- The wait for a failed check; nil means waiting cannot help, and that wins.
local failed, waits = {}, {}
local function fail(reason, wait)
  if failed[reason] == nil then
    failed[reason] = true
    waits[reason] = wait
  elseif waits[reason] ~= nil then
    if wait == nil then waits[reason] = nil else waits[reason] = math.max(waits[reason], wait) end
  end
end

-- What a refusing budget has left (nano-USD, the least over team and key), for the message.
local budget_left = {}
local function budget_short(reason, left)
  if budget_left[reason] == nil or left < budget_left[reason] then budget_left[reason] = left end
end

-- How long until `need` of the window's requests (field 'c') or tokens ('t') have left it.
local function wait_for(s, kind, need)
  local seconds = redis.call('ZRANGEBYSCORE', s.win, '(' .. num(cutoff), '+inf')
  local fields = {}
  for i, b in ipairs(seconds) do fields[i] = kind .. ':' .. b end
  local left = 0
  if #fields > 0 then
    for i, v in ipairs(redis.call('HMGET', s.wtok, unpack(fields))) do
      left = left + tonumber(v or '0')
      if left >= need then return tonumber(seconds[i]) + window - now end
    end
  end
  return window
end

-- A request id that still holds a lease was admitted before: count it once.
local duplicate = not own_lease_expired and redis.call('HEXISTS', KEYS[9], rid) == 1
if not duplicate then
  for _, s in ipairs(scopes) do
    if s.rpm ~= nil and s.count + 1 > s.rpm then
      if s.rpm == 0 then fail('rpm', nil)
      else fail('rpm', wait_for(s, 'c', s.count + 1 - s.rpm)) end
    end
    if s.tpm ~= nil and not rate_only and s.sum + tokens > s.tpm then
      if tokens > s.tpm then fail('tpm', nil)
      else fail('tpm', wait_for(s, 't', s.sum + tokens - s.tpm)) end
    end
  end

  local team_conc = opt(team.max_concurrent)
  if team_conc ~= nil and not rate_only and redis.call('ZCARD', KEYS[7]) - freed_leases + 1 > team_conc then
    fail('concurrency', concurrency_wait)
  end
  local key_conc = opt(key.max_concurrent)
  if key_conc ~= nil and not rate_only
      and tonumber(redis.call('HGET', KEYS[8], kfield) or '0') - freed_kconc + 1 > key_conc then
    fail('concurrency', concurrency_wait)
  end

  for _, s in ipairs(rate_only and {} or scopes) do
    local monthly, daily = opt(s.limits.budget_monthly_usd), opt(s.limits.budget_daily_usd)
    budgeted = budgeted or monthly ~= nil or daily ~= nil
    -- What the scope has reserved matters only to a budget of its own.
    local reserved = (monthly ~= nil or daily ~= nil) and tonumber(redis.call('HGET', KEYS[10], s.field) or '0') or 0
    if monthly ~= nil then
      local spent = tonumber(redis.call('HGET', KEYS[12], s.field) or '0')
      local limit = math.floor(monthly * 1e9 + 0.5)
      if spent + reserved + cost > limit then
        fail('budget_monthly', next_month - now)
        budget_short('budget_monthly', limit - spent - reserved)
      end
    end
    if daily ~= nil then
      local spent = tonumber(redis.call('HGET', KEYS[11], s.field) or '0')
      local limit = math.floor(daily * 1e9 + 0.5)
      if spent + reserved + cost > limit then
        fail('budget_daily', next_day - now)
        budget_short('budget_daily', limit - spent - reserved)
      end
    end
  end
end

local reason = nil
for _, r in ipairs({'rpm', 'tpm', 'concurrency', 'budget_monthly', 'budget_daily'}) do
  if failed[r] then reason = r break end
end
local admitted = reason == nil
local consume = admitted and not duplicate

-- Every check is done: the writes. First forget the expired state counted out above (right
-- whatever the verdict), then take the request's own slot, window entries and reservation.
for _, r in ipairs(expired) do
  release(KEYS[7], KEYS[8], KEYS[9], KEYS[10], r)
end
if #abandoned > 0 then
  for _, a in ipairs(abandoned) do
    redis.call('HSET', KEYS[13], a[1], table.concat({int(a[2]), a[3], num(now)}, ':'))
    if a[2] > 0 then
      for _, field in ipairs({'team', 'k:' .. a[3]}) do
        redis.call('HINCRBY', KEYS[11], field, int(a[2]))
        redis.call('HINCRBY', KEYS[12], field, int(a[2]))
      end
    end
  end
  redis.call('EXPIRE', KEYS[13], abandoned_ttl)
  -- Spend keys outlive their period by a day, as settle_batch keeps them.
  redis.call('EXPIRE', KEYS[11], math.ceil(next_day - now + 86400))
  redis.call('EXPIRE', KEYS[12], math.ceil(next_month - now + 86400))
end
for _, s in ipairs(scopes) do
  if s.windowed and #s.stale > 0 then
    redis.call('HINCRBY', s.wtok, '_count', -s.stale_count)
    redis.call('HINCRBY', s.wtok, '_sum', int(-s.stale_sum))
    redis.call('HDEL', s.wtok, unpack(s.stale))
    redis.call('ZREMRANGEBYSCORE', s.win, '-inf', cutoff)
  end
end

if consume then
  local windowed = ''
  for _, s in ipairs(scopes) do
    if s.windowed then
      windowed = windowed .. (s.field == 'team' and 't' or 'k')
      redis.call('ZADD', s.win, second, second)
      redis.call('HINCRBY', s.wtok, 'c:' .. second, 1)
      redis.call('HINCRBY', s.wtok, 't:' .. second, int(tokens))
      redis.call('HINCRBY', s.wtok, '_count', 1)
      s.sum = redis.call('HINCRBY', s.wtok, '_sum', int(tokens))
      s.count = s.count + 1
      touch(window_key_ttl, s.win, s.wtok)
    end
  end
  if not rate_only then
    redis.call('ZADD', KEYS[7], now + lease_ttl, rid)
    redis.call('HINCRBY', KEYS[8], kfield, 1)
    redis.call('HSET', KEYS[9], rid, table.concat({int(cost), second, int(tokens), windowed, key_id}, ':'))
    redis.call('HINCRBY', KEYS[10], 'team', int(cost))
    redis.call('HINCRBY', KEYS[10], kfield, int(cost))
    touch(lease_key_ttl, KEYS[7], KEYS[8], KEYS[9], KEYS[10])
  end
end

-- Headers: the scope with the fewest remaining; the window is empty again one window after
-- its newest second (looked up once per scope, for both headers; a window's members are its
-- seconds, each scored by itself, so the member says the score without Redis printing a double).
local function reset_of(s)
  if s.reset == nil then
    local newest = redis.call('ZRANGE', s.win, -1, -1)
    s.reset = now
    if #newest > 0 then s.reset = tonumber(newest[1]) + window end
  end
  return s.reset
end
local function header(limit_name, used_name)
  local best = nil
  for _, s in ipairs(scopes) do
    local limit = s[limit_name]
    if limit ~= nil then
      local remaining = math.max(0, limit - s[used_name])
      local reset = reset_of(s)
      if best == nil or remaining < best[2] then best = {limit, remaining, reset} end
    end
  end
  return best
end
return verdict(admitted, reason, reason and waits[reason], header('rpm', 'count'),
               header('tpm', 'sum'), reason and budget_left[reason])
