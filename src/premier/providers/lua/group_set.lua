-- Stores a cache entry and records its key in its group, in one step: an invalidation (group_clear.lua)
-- never finds the entry without its record, so no entry is left that no invalidation can find.
-- KEYS[1]: the entry's key. KEYS[2]: the group (a sorted set: key -> when its entry expires, in ms by
-- Redis's clock; +inf: never). ARGV[1]: the value. ARGV[2]: its TTL in ms (0: none).
local ttl = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expires = '+inf'
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
  expires = string.format('%d', now + ttl + 1)  -- (+1: SET may read the clock a moment after TIME)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
-- Keys whose entries have expired leave the record: it holds the group's live keys, not its history.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', now))
redis.call('ZADD', KEYS[2], expires, KEYS[1])
-- The record lives as long as its longest-lived entry (a shorter TTL never shortens it), and no longer.
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if last[2] == 'inf' then
  redis.call('PERSIST', KEYS[2])
else
  redis.call('PEXPIREAT', KEYS[2], last[2])
end
return 1
