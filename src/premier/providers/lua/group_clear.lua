-- Removes up to ARGV[1] of a group's keys (see group_set.lua) and their records; returns how many. A
-- key leaves the record in the step that removes its entry, so a store running meanwhile is either
-- removed here or stays recorded for the next invalidation: never an entry without a record. Once the
-- last is gone, so is the group (Redis deletes an empty sorted set).
-- KEYS[1]: the group. ARGV[1]: at most this many keys (the caller repeats while it gets that many).
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
local keys = {}
for i = 1, #popped, 2 do
  keys[#keys + 1] = popped[i]
end
if #keys > 0 then
  redis.call('UNLINK', unpack(keys))
end
return #keys
