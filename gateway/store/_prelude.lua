-- Shared by the team scripts (prepended when they are loaded): number formatting and the one
-- way a concurrency lease ends. Numbers that become text (a value, part of a field or of an
-- argument) are formatted here, because Lua's own conversion keeps only 14 significant digits.
-- A number passed to redis.call as it is reaches Redis with every digit (Redis prints it itself,
-- for less than string.format costs), which serves where only its value counts: a score, a bound.
-- '%d' costs a third of '%.17g' and prints a positive whole number below 2^53 with the same digits.
local function num(x)
  if x > 0 and x < 2^53 and x % 1 == 0 then return string.format('%d', x) end
  return string.format('%.17g', x)
end
local function int(x)  -- never '-0'
  if x == 0 then return '0' end
  if x > -2^53 and x < 2^53 and x % 1 == 0 then return string.format('%d', x) end
  return string.format('%.0f', x)
end
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

-- A batch's mark in the team's set of batches (see keys.TeamKeys.batches): a writer that did
-- not hear back spills the batch and a replay, by any process, finds the mark and skips what it
-- covers. The writer removes the marks once it has the reply (or the replay has its own), so the
-- set holds only batches in flight or waiting in a spill file, plus those of a writer killed
-- between sending and hearing back. Beyond `keep` marks, the oldest of those made before
-- `cutoff` (a batch id prefix: its creation time) go, at most 100 per call.
local function mark_batch(batches, member, cutoff, keep)
  redis.call('ZADD', batches, 0, member)
  local excess = redis.call('ZCARD', batches) - keep
  if excess > 0 then
    local old = redis.call('ZRANGEBYLEX', batches, '-', '(' .. cutoff, 'LIMIT', 0, math.min(excess, 100))
    if #old > 0 then redis.call('ZREM', batches, unpack(old)) end
  end
end

-- HMGET of any number of fields, a thousand at a time (unpack is bounded by the Lua stack).
local function read_fields(hash, fields)
  if #fields == 0 then return {} end
  if #fields <= 1000 then return redis.call('HMGET', hash, unpack(fields)) end
  local values = {}
  for first = 1, #fields, 1000 do
    local part = redis.call('HMGET', hash, unpack(fields, first, math.min(first + 999, #fields)))
    for i, v in ipairs(part) do values[first + i - 1] = v end
  end
  return values
end

-- Changes to counters summed per hash field, so that a batch writes each field once
-- (write_sums): the end state is that of one HINCRBY per change wherever nothing reads those
-- fields in between. A sum about to leave the range where doubles hold every integer (2^53) is
-- written out first, so that every sum stays exact. sums: hash -> field -> amount not yet
-- written; order: hash, field, hash, field... in the order of their first change.
local function add_to_sums(sums, order, hash, field, amount)
  local fields = sums[hash]
  if fields == nil then fields = {} sums[hash] = fields end
  local sum = fields[field]
  if sum == nil then
    order[#order + 1] = hash
    order[#order + 1] = field
    fields[field] = amount
    return
  end
  local new = sum + amount
  if new > -2^53 and new < 2^53 then
    fields[field] = new
  else
    redis.call('HINCRBY', hash, field, int(sum))
    fields[field] = amount
  end
end
local function write_sums(sums, order)
  for i = 1, #order, 2 do
    local hash, field = order[i], order[i + 1]
    redis.call('HINCRBY', hash, field, int(sums[hash][field]))
  end
end

-- Lease keys live and die together, so that a reservation never outlives its lease.
local function touch(ttl, ...)
  for i = 1, select('#', ...) do redis.call('EXPIRE', (select(i, ...)), ttl) end
end
