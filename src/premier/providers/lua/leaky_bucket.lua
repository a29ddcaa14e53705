-- Leaky bucket (see premier/features/ratelimit/leaky_bucket.py): virtual scheduling on Redis's clock.
-- KEYS[1]: the limiter key (a string: the time the bucket is next free). ARGV: quota, duration, cost,
-- bucket_size.
local quota, duration, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bucket_size = tonumber(ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local interval = duration / quota
local capacity = bucket_size * interval
local next_free = tonumber(redis.call('GET', KEYS[1]))
local start = now
if next_free ~= nil and next_free > now then start = next_free end
local delay = start - now
if delay > capacity + 1e-9 then
  return {0, 0, tostring(delay), tostring(delay - capacity), '0'}
end
next_free = start + cost * interval
-- '%.17g' reads back exactly (tostring keeps 14 digits: 0.1 ms of an epoch time, which adds up)
redis.call('SET', KEYS[1], string.format('%.17g', next_free), 'PX', math.max(1, math.ceil((next_free - now) * 1000)))
local backlog = next_free - now
local remaining = math.max(0, math.floor((capacity - backlog) / interval + 1 + 1e-9))
return {1, remaining, tostring(backlog), '0', tostring(delay)}
