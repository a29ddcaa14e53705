-- Sliding window (see premier/features/ratelimit/sliding_window.py): exact, as a log of admission times
-- in a list, newest first, on Redis's clock. A call is admitted when fewer than `quota` admissions lie in
-- the half-open window (now - duration, now]. The admissions that have left the window are dropped from
-- the tail, so the list holds at most `quota` entries (and expires with the window); LPUSH, RPOP and
-- LINDEX at its ends cost Redis less than a sorted set's inserts and range deletes.
-- Times are integer microseconds (exact in a double, and stored by Redis as integers).
-- KEYS[1]: the limiter key (a list). ARGV: quota, duration, cost.
-- Returns the remaining calls when admitted, else {0, remaining, reset_after, retry_after, 0}.
local key = KEYS[1]
local quota, duration, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local time = redis.call('TIME')
local stamp = time[1] .. string.format('%06d', time[2])
local horizon = tonumber(stamp) - duration * 1000000
local function expired(index)  -- whether the entry at `index` (-1: the oldest) has left the window
  local entry = redis.call('LINDEX', key, index)
  return entry and tonumber(entry) <= horizon
end
if expired(-1) then
  if not expired(-2) then
    redis.call('RPOP', key)  -- the usual case: one admission left since the last check
  else
    -- many left (after a burst): count them by bisection rather than pop a long log one by one
    local out, kept = 2, redis.call('LLEN', key) + 1  -- entry -out has left; -kept has not (or is none)
    while kept - out > 1 do
      local mid = math.floor((out + kept) / 2)
      if expired(-mid) then out = mid else kept = mid end
    end
    redis.call('LTRIM', key, 0, -out - 1)  -- (on a list of `out` entries this removes the key)
  end
end
local live = redis.call('LLEN', key)
if live + cost <= quota then
  if cost == 1 then
    redis.call('LPUSH', key, stamp)
  else
    local stamps = {}
    for i = 1, math.min(cost, 1000) do stamps[i] = stamp end
    for i = 1, cost, 1000 do  -- (unpack is bounded by Lua's stack)
      redis.call('LPUSH', key, unpack(stamps, 1, math.min(1000, cost - i + 1)))
    end
  end
  redis.call('PEXPIRE', key, math.ceil(duration * 1000))
  return quota - live - cost  -- admitted: the remaining calls alone (see AsyncRedisCache.acquire)
end
local reset_after = '0'  -- an empty log (a cost over the quota on a fresh key) is already reset
if live > 0 then reset_after = tostring((tonumber(redis.call('LINDEX', key, 0)) - horizon) / 1000000) end
local retry_after = 'inf'
if cost <= quota then
  -- the call fits once enough of the oldest admissions have left the window
  retry_after = tostring((tonumber(redis.call('LINDEX', key, quota - cost)) - horizon) / 1000000)
end
return {0, math.max(0, quota - live), reset_after, retry_after, '0'}
