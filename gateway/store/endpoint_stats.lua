-- One observation of an upstream endpoint: moving averages of time to first token and output
-- rate, and the count of consecutive failures. The average is policies.health.moving_average
-- (Redis cannot run it), with its weight MEASUREMENT_WEIGHT passed in: change both together.
-- KEYS: 1 stats hash
-- ARGV: 1 endpoint, 2 ttft seconds or '', 3 output tokens/s or '', 4 ok (1/0), 5 now, 6 weight
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local s = {}
if raw then s = cjson.decode(raw) end
local alpha = tonumber(ARGV[6])
local function number(v) if v == nil or v == cjson.null then return nil end return tonumber(v) end
local function ewma(previous, sample)
  if sample == nil then return previous end
  if previous == nil then return sample end
  return previous * (1 - alpha) + sample * alpha
end
local stats = {
  ttft_s = ewma(number(s.ttft_s), number(ARGV[2])),
  output_tps = ewma(number(s.output_tps), number(ARGV[3])),
  failures = ARGV[4] == '1' and 0 or (number(s.failures) or 0) + 1,
  samples = (number(s.samples) or 0) + 1,
  updated_at = tonumber(ARGV[5]),
}
-- Stored as strings of 17 digits: cjson keeps only 14, and the in-memory twin keeps them all.
local fields = {}
for k, v in pairs(stats) do fields[k] = num(v) end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(fields))
return 1
