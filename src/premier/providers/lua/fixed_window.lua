-- Fixed window (see premier/features/ratelimit/fixed_window.py): the same logic on Redis's clock.
-- KEYS[1]: the limiter key (a hash: w = window start, c = count). ARGV: quota, duration, cost.
-- Returns {allowed, remaining, reset_after, retry_after, delay}; times as strings (seconds).
-- State is written with '%.17g', which reads back as the same number: tostring keeps only 14 digits,
-- so a window start such as 1718000007.3 would never compare equal again and the count would reset.
local quota, duration, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local window_start = now - math.fmod(now, duration)
local window_end = window_start + duration
local state = redis.call('HMGET', KEYS[1], 'w', 'c')
local count = 0
if tonumber(state[1]) == window_start then count = tonumber(state[2]) or 0 end
local reset_after = window_end - now
if count + cost <= quota then
  count = count + cost
  redis.call('HSET', KEYS[1], 'w', string.format('%.17g', window_start), 'c', count)
  redis.call('PEXPIREAT', KEYS[1], math.ceil(window_end * 1000))
  return {1, quota - count, tostring(reset_after), '0', '0'}
end
local retry_after = reset_after
if cost > quota then retry_after = 'inf' end
return {0, quota - count, tostring(reset_after), tostring(retry_after), '0'}
