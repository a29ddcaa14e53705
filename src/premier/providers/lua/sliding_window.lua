-- Sliding window (see premier/features/ratelimit/sliding_window.py): exact, as a log of admission times
-- in a sorted set, on Redis's clock. A call is admitted when fewer than `quota` admissions lie in the
-- half-open window (now - duration, now].
-- KEYS[1]: the limiter key (a sorted set). ARGV: quota, duration, cost.
local quota, duration, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local horizon = now - duration
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', horizon)
local count = redis.call('ZCARD', KEYS[1])
if count + cost <= quota then
  for i = 1, cost do
    -- members must be unique: the admission's time and its rank in the log
    redis.call('ZADD', KEYS[1], now, time[1] .. '.' .. time[2] .. ':' .. (count + i))
  end
  redis.call('PEXPIRE', KEYS[1], math.ceil(duration * 1000))
  return {1, quota - count - cost, tostring(duration), '0', '0'}
end
local newest = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
local reset_after = '0'  -- an empty log (a cost over the quota on a fresh key) is already reset
if newest ~= nil then reset_after = tostring(newest - horizon) end
local retry_after = 'inf'
if cost <= quota then
  -- the call fits once enough of the oldest admissions have left the window
  local blocking = redis.call('ZRANGE', KEYS[1], count + cost - quota - 1, count + cost - quota - 1, 'WITHSCORES')
  retry_after = tostring(tonumber(blocking[2]) - horizon)
end
return {0, math.max(0, quota - count), reset_after, retry_after, '0'}
