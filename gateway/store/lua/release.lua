-- A runner is done with a job: ack and delete its entry, free its slot, wake a waiter, and
-- fold the run time into the model's moving average. Nothing, if another runner owns it now.
-- KEYS: queue, slots, wake, avg; ARGV: group, consumer, entry id, job id, run s (or ''), seed
local current = owner(KEYS[1], ARGV[1], ARGV[3])
if current and current ~= ARGV[2] then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[4])
wake(KEYS[3])
if ARGV[5] ~= '' then
  local avg = tonumber(redis.call('GET', KEYS[4]) or ARGV[6])
  redis.call('SET', KEYS[4], tostring(0.8 * avg + 0.2 * tonumber(ARGV[5])))
end
return 1
