-- Waiting (all, and accepted by this replica), running, and the average run of one model.
-- KEYS: queue, slots, avg; ARGV: group, replica, seed average
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms())
local waiting = undelivered(KEYS[1], ARGV[1])
local here = 0
for _, e in ipairs(waiting) do
  if field(e, 'replica') == ARGV[2] then here = here + 1 end
end
return {#waiting, here, redis.call('ZCARD', KEYS[2]), redis.call('GET', KEYS[3]) or ARGV[3]}
