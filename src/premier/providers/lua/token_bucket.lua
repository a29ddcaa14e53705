-- Token bucket (see premier/features/ratelimit/token_bucket.py): fractional tokens, on Redis's clock.
-- KEYS[1]: the limiter key (a hash: t = tokens, l = last refill). ARGV: quota, duration, cost.
local quota, duration, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local rate = quota / duration
local state = redis.call('HMGET', KEYS[1], 't', 'l')
local tokens, last = tonumber(state[1]), tonumber(state[2])
if tokens == nil or last == nil then tokens, last = quota, now end
if now > last then
  tokens = math.min(quota, tokens + (now - last) * rate)
  last = now
end
local allowed = 0
if tokens + 1e-9 >= cost then
  allowed = 1
  tokens = math.max(0, tokens - cost)
end
local reset_after = (quota - tokens) / rate
-- '%.17g' reads back exactly (tostring keeps 14 digits: 0.1 ms of an epoch time)
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'l', string.format('%.17g', last))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(reset_after * 1000)))
local retry_after = '0'
if allowed == 0 then
  if cost <= quota then retry_after = tostring((cost - tokens) / rate) else retry_after = 'inf' end
end
return {allowed, math.floor(tokens + 1e-9), tostring(reset_after), retry_after, '0'}
