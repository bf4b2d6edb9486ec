-- Admission of a batch of one key's requests: key still valid, model allowed, RPM, TPM, a
-- concurrency lease and the daily and monthly budget reservation, for the team and for the key.
-- The requests are admitted one after another at the batch's `now`, each seeing the ones before
-- it: the replies and every key end exactly as one call of the single-request script per request
-- would leave them. The shared state is read once and kept in Lua while the requests are judged;
-- the changes are summed and written once, after every request is judged.
-- All or nothing per request: Redis does not roll a script back, so the arguments are checked
-- first, every read comes before the first write, and the writes (bounded integers into integer
-- counters) cannot fail. Expired state (leases whose holder died, window seconds that left the
-- window) is counted out while judging and deleted with the writes.
-- Mirrored by MemoryStore.admit (one request at a time: a batch is its requests in order):
-- change both together.
-- KEYS: 1 team record, 2 key record, 3 team window, 4 team window tokens, 5 key window,
--       6 key window tokens, 7 leases, 8 key concurrency, 9 reservations, 10 reserved,
--       11 spend of the day, 12 spend of the month, 13 abandoned
-- ARGV: 1 key id, 2 next UTC day start, 3 next UTC month start, 4 lease ttl (> 0), 5 window
--       (at least a second), 6 lease key ttl, 7 retry hint when the concurrency is full, 8 how
--       long an abandoned reservation is kept, 9 now; then five per request: request id, tokens,
--       cost (nano-USD), models (newline-separated), rate only (1 counts the request against RPM
--       alone, for token counting: no TPM, concurrency or budget check and no lease).
-- Returns one entry per request, in order: its verdict {admitted 1/0, reason, retry hint, the
-- requests and the tokens header triples (limit, remaining, reset), what a refusing budget has
-- left (nano-USD), 1 when a budget applies to the request (team's or key's)}, or, for a request
-- whose own arguments are invalid, the message 'admit: invalid <what>' (it changes nothing).
local SHARED, PER_REQUEST = 9, 5
local key_id = ARGV[1]
local next_day, next_month = tonumber(ARGV[2]), tonumber(ARGV[3])
local lease_ttl, window, lease_key_ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local concurrency_wait, abandoned_ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
local now_arg = ARGV[9]
local now = tonumber(now_arg)
local kfield = 'k:' .. key_id

-- Whole numbers below 2^53 stay exact in Lua's doubles and in Redis' 64-bit counters.
local function whole(x) return x ~= nil and x >= 0 and x < 2^53 and x == math.floor(x) end
local function finite(x) return x ~= nil and x == x and x > -2^53 and x < 2^53 end
-- A positive lease ttl and a window of at least a second keep the batch's own leases and its
-- window second live for the rest of the batch, as they are for the next single call.
local function invalid_shared()
  if (#ARGV - SHARED) % PER_REQUEST ~= 0 or #ARGV <= SHARED then return 'argument count' end
  if not (finite(now) and now > 0) then return 'now' end
  if not finite(next_day) then return 'next day' end
  if not finite(next_month) then return 'next month' end
  if not (finite(lease_ttl) and lease_ttl > 0) then return 'lease ttl' end
  if not (finite(window) and window >= 1) then return 'window' end
  if not whole(tonumber(lease_key_ttl)) then return 'lease key ttl' end
  if not finite(concurrency_wait) then return 'concurrency wait' end
  if not whole(abandoned_ttl) then return 'abandoned ttl' end
  if key_id == '' then return 'key id' end
end
local invalid = invalid_shared()
if invalid then return redis.error_reply('ERR admit: invalid ' .. invalid) end

local requests = {}
for first = SHARED + 1, #ARGV, PER_REQUEST do
  local r = {rid = ARGV[first], tokens = tonumber(ARGV[first + 1]), cost = tonumber(ARGV[first + 2]),
             model = ARGV[first + 3], rate_only = ARGV[first + 4] == '1',
             invalid = nil, allowed = nil, windowed = nil}  -- (named here: the table is made its size)
  if not whole(r.tokens) then r.invalid = 'tokens'
  elseif not whole(r.cost) then r.invalid = 'cost'
  elseif r.rid == '' then r.invalid = 'request id'
  elseif r.model == '' then r.invalid = 'model' end
  requests[#requests + 1] = r
end

local function out(v) if v == nil then return '' end return num(v) end
-- A verdict without its header triples (positions 4 to 9, '' until `header` fills them).
local function verdict(admitted, reason, retry, budget_left, budgeted)
  return {admitted and 1 or 0, reason or '', out(retry), '', '', '', '', '', '', out(budget_left), budgeted and 1 or 0}
end
local function reply_each(judge)
  local replies = {}
  for i, r in ipairs(requests) do
    if r.invalid then replies[i] = 'admit: invalid ' .. r.invalid else replies[i] = judge(r) end
  end
  return replies
end

local records = redis.call('MGET', KEYS[1], KEYS[2])
local refusal = nil
if not records[1] or not records[2] then refusal = 'revoked' end
local team, key
if refusal == nil then
  team = cjson.decode(records[1]).limits
  local keyrec = cjson.decode(records[2])
  local expires = opt(keyrec.expires_at)
  if keyrec.revoked == true then refusal = 'revoked'
  elseif expires ~= nil and expires <= now then refusal = 'expired' end
  key = keyrec.limits
end
if refusal ~= nil then
  return reply_each(function() return verdict(false, refusal) end)
end

local function allows(models, wanted_models)
  if models == nil then return true end
  for wanted in string.gmatch(wanted_models, '[^\n]+') do
    local found = false
    for _, m in ipairs(models) do if m == wanted then found = true break end end
    if not found then return false end
  end
  return true
end
local team_models, key_models = opt(team.allowed_models), opt(key.allowed_models)
-- The requests that reach the limits; a single call returns before reading them for the others.
local judged = {}
for _, r in ipairs(requests) do
  r.allowed = not r.invalid and allows(team_models, r.model) and allows(key_models, r.model)
  if r.allowed then judged[#judged + 1] = r end
end
if #judged == 0 then
  return reply_each(function() return verdict(false, 'model_not_allowed') end)
end

-- A command whose arguments after the key are `items`, in calls of at most `per_call` of them.
local function call_in_parts(command, key_name, items, per_call)
  for first = 1, #items, per_call do
    redis.call(command, key_name, unpack(items, first, math.min(first + per_call - 1, #items)))
  end
end

-- Expired leases (a replica died, or nobody settled) give back their slot. Their reservation is
-- abandoned, not freed: the upstream may have served and billed the request, so it is charged as
-- spend at its reserved amount (the most it could have cost) and kept in the abandoned hash; a
-- settlement arriving later is then a duplicate (settle_batch.lua). A lease still holding its
-- reservation was never settled: a settlement ends the lease and its reservation together.
-- Budgets see no change (reserved becomes spent, field by field): the checks below add spend and
-- reservations as they were read. The release and the charge are written with the other writes.
-- The reservations of the batch's own request ids are read in the same call, for duplicates.
local expired = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now_arg)  -- now, as the caller wrote it
local is_expired, asked = {}, {}
for i, r in ipairs(expired) do is_expired[r] = true asked[i] = r end
for _, r in ipairs(judged) do asked[#asked + 1] = r.rid end
local held_values = read_fields(KEYS[9], asked)
local freed_kconc = 0  -- what releasing the expired leases gives back to this key
local abandoned = {}  -- {request id, cost, holder key id}
for i, r in ipairs(expired) do
  local held = held_values[i]
  if held then
    local cost, _, _, _, holder = parse_held(held)
    if holder == key_id then freed_kconc = freed_kconc + 1 end
    abandoned[#abandoned + 1] = {r, cost, holder}
  end
end
-- A request id that holds a lease past this batch's cleanup was admitted before: it counts once.
-- (A live lease always has its reservation: the scripts write and end them together.)
local holding = {}
for i, r in ipairs(judged) do
  if held_values[#expired + i] and not is_expired[r.rid] then holding[r.rid] = true end
end

-- Sliding windows, counted per second: the requests of second b count while b > now - window,
-- so a window holds at most one entry per second whatever the request rate, and purging after
-- a burst costs at most a window's worth of seconds. Seconds out of the window are counted out
-- here and deleted with the other writes. The batch counts its requests in one second, the
-- newest or not (a caller's clock may run behind), which stays in the window for the batch.
local second = string.format('%d', math.floor(now))
local second_n = math.floor(now)
local cutoff = now - window  -- a bound only: passed as a number (see the prelude)
local window_key_ttl = int(math.ceil(window * 2))
-- The window hash's fields of `seconds`: each second's requests ('c:') and tokens ('t:').
local function second_fields(seconds)
  local fields = {}
  for _, b in ipairs(seconds) do
    fields[#fields + 1] = 'c:' .. b
    fields[#fields + 1] = 't:' .. b
  end
  return fields
end

-- A scope's limits, and the counters they apply to as the batch goes (every field named here,
-- so that the table is made its size).
local function nanos(usd) if usd ~= nil then return math.floor(usd * 1e9 + 0.5) end end
local function scope(limits, win, wtok, field, letter)
  local rpm, tpm = opt(limits.rpm), opt(limits.tpm)
  local monthly, daily = opt(limits.budget_monthly_usd), opt(limits.budget_daily_usd)
  return {win = win, wtok = wtok, field = field, letter = letter, rpm = rpm, tpm = tpm,
          monthly = monthly, daily = daily, monthly_limit = nanos(monthly), daily_limit = nanos(daily),
          -- the header's numbers that change only with the newest second, as text
          rpm_text = rpm and num(rpm), tpm_text = tpm and num(tpm), reset_text = nil,
          windowed = rpm ~= nil or tpm ~= nil,
          count = 0, sum = 0,                    -- requests and tokens in the window
          added_count = 0, added_tokens = 0,     -- what the batch has counted in `second` so far
          stale = nil, stale_count = 0, stale_sum = 0, newest = nil, live = nil,
          reserved = nil, spent_day = nil, spent_month = nil}  -- nano-USD, when budgeted
end
local scopes = {scope(team, KEYS[3], KEYS[4], 'team', 't'), scope(key, KEYS[5], KEYS[6], kfield, 'k')}
for _, s in ipairs(scopes) do
  if s.windowed then
    s.stale = second_fields(redis.call('ZRANGEBYSCORE', s.win, '-inf', cutoff))
    -- The totals and the stale seconds' shares, in one read.
    local values = read_fields(s.wtok, {'_count', '_sum', unpack(s.stale)})
    s.stale_count, s.stale_sum = 0, 0
    for i = 3, 2 + #s.stale, 2 do
      s.stale_count = s.stale_count + tonumber(values[i] or '0')
      s.stale_sum = s.stale_sum + tonumber(values[i + 1] or '0')
    end
    s.count = tonumber(values[1] or '0') - s.stale_count
    s.sum = tonumber(values[2] or '0') - s.stale_sum
    -- The window's newest second that stays (a window's members are its seconds, each scored
    -- by itself, so the member says the score without Redis printing a double).
    local newest = redis.call('ZRANGE', s.win, -1, -1)
    if #newest > 0 and tonumber(newest[1]) > cutoff then s.newest = tonumber(newest[1]) end
  end
end

-- The window's seconds that count, with their requests and tokens as Redis has them: read when a
-- retry hint first needs them (the batch's additions are kept apart, in s.added_*).
local function live_seconds(s)
  if s.live == nil then
    local seconds = redis.call('ZRANGEBYSCORE', s.win, '(' .. num(cutoff), '+inf')
    local values = read_fields(s.wtok, second_fields(seconds))
    s.live = {}
    for i, b in ipairs(seconds) do
      s.live[i] = {second = tonumber(b), c = tonumber(values[2 * i - 1] or '0'),
                   t = tonumber(values[2 * i] or '0')}
    end
  end
  return s.live
end

-- How long until `need` of the window's requests (kind 'c') or tokens ('t') have left it, the
-- seconds taken oldest first, the batch's own second among them with what the batch added.
local function wait_for(s, kind, need)
  local added = kind == 'c' and s.added_count or s.added_tokens
  local own_pending = s.added_count > 0  -- the batch's second is a member once it counted a request
  local left = 0
  local function take(b, amount)
    left = left + amount
    if left >= need then return b + window - now end
  end
  for _, entry in ipairs(live_seconds(s)) do
    local found
    if own_pending and entry.second > second_n then
      own_pending = false
      found = take(second_n, added)
      if found then return found end
    end
    local amount = entry[kind]
    if own_pending and entry.second == second_n then
      own_pending = false
      amount = amount + added
    end
    found = take(entry.second, amount)
    if found then return found end
  end
  if own_pending then
    local found = take(second_n, added)
    if found then return found end
  end
  return window
end

-- Counters read once, when a request first needs them (concurrency, and what a scope has spent
-- and reserved, which matters only to a budget of its own), plus what the batch has taken since.
-- Reserved becomes spent for an abandoned reservation: their sum is what the budgets compare.
local batch_leases, batch_reserved = 0, 0  -- leases taken, nano-USD reserved (for team and key alike)
local team_leases, key_leases = nil, nil  -- as read, less the expired ones
local function leases_held()
  if team_leases == nil then team_leases = redis.call('ZCARD', KEYS[7]) - #expired end
  return team_leases + batch_leases
end
local function key_leases_held()
  if key_leases == nil then key_leases = tonumber(redis.call('HGET', KEYS[8], kfield) or '0') - freed_kconc end
  return key_leases + batch_leases
end
-- What the budgeted scopes have reserved and spent in the day and the month, read when a request
-- first needs it: one call per hash for both scopes.
local budgets_read = false
local function read_budgets()
  local budgeted, fields, daily, monthly = {}, {}, false, false
  for _, s in ipairs(scopes) do
    if s.monthly ~= nil or s.daily ~= nil then
      budgeted[#budgeted + 1] = s
      fields[#fields + 1] = s.field
      daily, monthly = daily or s.daily ~= nil, monthly or s.monthly ~= nil
    end
  end
  local reserved = redis.call('HMGET', KEYS[10], unpack(fields))
  local day = daily and redis.call('HMGET', KEYS[11], unpack(fields))
  local month = monthly and redis.call('HMGET', KEYS[12], unpack(fields))
  for i, s in ipairs(budgeted) do
    s.reserved = tonumber(reserved[i] or '0')
    s.spent_day = day and tonumber(day[i] or '0')
    s.spent_month = month and tonumber(month[i] or '0')
  end
  budgets_read = true
end

-- The budget periods, in the order they are checked: the scope's limit and spent fields, when it renews.
local PERIODS = {
  {reason = 'budget_monthly', limit = 'monthly_limit', spent = 'spent_month', renews = next_month},
  {reason = 'budget_daily', limit = 'daily_limit', spent = 'spent_day', renews = next_day},
}

local team_conc, key_conc = opt(team.max_concurrent), opt(key.max_concurrent)
local budgeted_scopes = false
for _, s in ipairs(scopes) do
  budgeted_scopes = budgeted_scopes or s.monthly ~= nil or s.daily ~= nil
end

-- A header triple into positions `at` to `at` + 2 of a verdict: limit, remaining and reset of
-- the scope with the fewest remaining; the window is empty again one window after its newest
-- second.
local function header(reply, at, limit_name, used_name, limit_text)
  local best_limit, best_remaining, best = nil, nil, nil
  for _, s in ipairs(scopes) do
    local limit = s[limit_name]
    if limit ~= nil then
      local remaining = math.max(0, limit - s[used_name])
      if best_limit == nil or remaining < best_remaining then best_limit, best_remaining, best = limit, remaining, s end
    end
  end
  if best ~= nil then
    if best.reset_text == nil then best.reset_text = num(best.newest ~= nil and best.newest + window or now) end
    reply[at], reply[at + 1], reply[at + 2] = best[limit_text], num(best_remaining), best.reset_text
  end
end

-- A request's failed checks (made at its first failure: most requests fail none): the wait of
-- each, nil when waiting cannot help, and that wins; what a refusing budget has left (nano-USD,
-- the least over team and key), for the message.
local function fail(checks, reason, wait)
  checks = checks or {failed = {}, waits = {}, left = {}}
  local failed, waits = checks.failed, checks.waits
  if failed[reason] == nil then
    failed[reason] = true
    waits[reason] = wait
  elseif waits[reason] ~= nil then
    if wait == nil then waits[reason] = nil else waits[reason] = math.max(waits[reason], wait) end
  end
  return checks
end
local function budget_short(checks, reason, left)
  if checks.left[reason] == nil or left < checks.left[reason] then checks.left[reason] = left end
end

local REASONS = {'rpm', 'tpm', 'concurrency', 'budget_monthly', 'budget_daily'}  -- the first failed is the reason
local consumed = {}  -- the admitted requests that take a window entry or a lease, in order
local function judge(r)
  if not r.allowed then return verdict(false, 'model_not_allowed') end
  local checks = nil

  local tokens, cost, rate_only = r.tokens, r.cost, r.rate_only
  local duplicate = holding[r.rid] == true
  local budgeted = false
  if not duplicate then
    for _, s in ipairs(scopes) do
      if s.rpm ~= nil and s.count + 1 > s.rpm then
        if s.rpm == 0 then checks = fail(checks, 'rpm', nil)
        else checks = fail(checks, 'rpm', wait_for(s, 'c', s.count + 1 - s.rpm)) end
      end
      if s.tpm ~= nil and not rate_only and s.sum + tokens > s.tpm then
        if tokens > s.tpm then checks = fail(checks, 'tpm', nil)
        else checks = fail(checks, 'tpm', wait_for(s, 't', s.sum + tokens - s.tpm)) end
      end
    end
    if team_conc ~= nil and not rate_only and leases_held() + 1 > team_conc then
      checks = fail(checks, 'concurrency', concurrency_wait)
    end
    if key_conc ~= nil and not rate_only and key_leases_held() + 1 > key_conc then
      checks = fail(checks, 'concurrency', concurrency_wait)
    end
    if not rate_only then
      budgeted = budgeted_scopes
      for _, s in ipairs(scopes) do
        if (s.monthly ~= nil or s.daily ~= nil) and not budgets_read then read_budgets() end
        for _, p in ipairs(PERIODS) do
          local limit = s[p.limit]
          if limit ~= nil then
            local taken = s[p.spent] + s.reserved + batch_reserved
            if taken + cost > limit then
              checks = fail(checks, p.reason, p.renews - now)
              budget_short(checks, p.reason, limit - taken)
            end
          end
        end
      end
    end
  end

  local reason = nil
  if checks ~= nil then
    for _, name in ipairs(REASONS) do
      if checks.failed[name] then reason = name break end
    end
  end
  if reason == nil and not duplicate then  -- the request takes its share, for the ones after it
    consumed[#consumed + 1] = r
    r.windowed = ''
    for _, s in ipairs(scopes) do
      if s.windowed then
        r.windowed = r.windowed .. s.letter
        s.count, s.sum = s.count + 1, s.sum + tokens
        s.added_count, s.added_tokens = s.added_count + 1, s.added_tokens + tokens
        if s.newest == nil or s.newest < second_n then s.newest, s.reset_text = second_n, nil end
      end
    end
    if not rate_only then
      holding[r.rid] = true
      batch_leases, batch_reserved = batch_leases + 1, batch_reserved + cost
    end
  end
  local reply = verdict(reason == nil, reason, reason and checks.waits[reason], reason and checks.left[reason],
                        budgeted)
  header(reply, 4, 'rpm', 'count', 'rpm_text')
  header(reply, 7, 'tpm', 'sum', 'tpm_text')
  return reply
end
local replies = reply_each(judge)

-- Every request is judged: the writes. Counters are summed (see add_to_sums), which is right
-- since nothing above read them after the first read. First forget the expired state counted
-- out above, then take the admitted requests' slots, window entries and reservations.
local sums, order = {}, {}
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now_arg)
  local ended, entries = {}, {}
  for _, a in ipairs(abandoned) do
    local rid, cost, holder = a[1], a[2], a[3]
    ended[#ended + 1] = rid
    add_to_sums(sums, order, KEYS[10], 'team', -cost)
    add_to_sums(sums, order, KEYS[10], 'k:' .. holder, -cost)
    add_to_sums(sums, order, KEYS[8], 'k:' .. holder, -1)
    entries[#entries + 1] = rid
    entries[#entries + 1] = table.concat({int(cost), holder, num(now)}, ':')
    if cost > 0 then
      for _, field in ipairs({'team', 'k:' .. holder}) do
        add_to_sums(sums, order, KEYS[11], field, cost)
        add_to_sums(sums, order, KEYS[12], field, cost)
      end
    end
  end
  if #abandoned > 0 then
    call_in_parts('HDEL', KEYS[9], ended, 1000)
    call_in_parts('HSET', KEYS[13], entries, 1000)
  end
end
for _, s in ipairs(scopes) do
  if s.windowed and #s.stale > 0 then
    add_to_sums(sums, order, s.wtok, '_count', -s.stale_count)
    add_to_sums(sums, order, s.wtok, '_sum', -s.stale_sum)
  end
end

local leases, reservations = {}, {}
local count_field, tokens_field = 'c:' .. second, 't:' .. second
local lease_expiry = now + lease_ttl
for _, r in ipairs(consumed) do
  for _, s in ipairs(scopes) do
    if s.windowed then
      add_to_sums(sums, order, s.wtok, count_field, 1)
      add_to_sums(sums, order, s.wtok, tokens_field, r.tokens)
      add_to_sums(sums, order, s.wtok, '_count', 1)
      add_to_sums(sums, order, s.wtok, '_sum', r.tokens)
    end
  end
  if not r.rate_only then
    leases[#leases + 1] = lease_expiry
    leases[#leases + 1] = r.rid
    reservations[#reservations + 1] = r.rid
    reservations[#reservations + 1] = table.concat({int(r.cost), second, int(r.tokens), r.windowed, key_id}, ':')
    add_to_sums(sums, order, KEYS[8], kfield, 1)
    add_to_sums(sums, order, KEYS[10], 'team', r.cost)
    add_to_sums(sums, order, KEYS[10], kfield, r.cost)
  end
end
-- The window totals are written before the stale seconds go, so that the hash never empties.
write_sums(sums, order)
for _, s in ipairs(scopes) do
  if s.windowed and #s.stale > 0 then
    call_in_parts('HDEL', s.wtok, s.stale, 1000)
    redis.call('ZREMRANGEBYSCORE', s.win, '-inf', cutoff)
  end
end
if #abandoned > 0 then
  redis.call('EXPIRE', KEYS[13], abandoned_ttl)
  -- Spend keys outlive their period by a day, as settle_batch keeps them.
  redis.call('EXPIRE', KEYS[11], math.ceil(next_day - now + 86400))
  redis.call('EXPIRE', KEYS[12], math.ceil(next_month - now + 86400))
end
if #consumed > 0 then
  for _, s in ipairs(scopes) do
    if s.windowed then
      redis.call('ZADD', s.win, second, second)
      touch(window_key_ttl, s.win, s.wtok)
    end
  end
end
if #leases > 0 then
  call_in_parts('ZADD', KEYS[7], leases, 1000)
  call_in_parts('HSET', KEYS[9], reservations, 1000)
  touch(lease_key_ttl, KEYS[7], KEYS[8], KEYS[9], KEYS[10])
end
return replies
