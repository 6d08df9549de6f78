-- Waiting (all, and accepted by this replica), running, and the average run of one model.
-- Also forgets consumers (replicas) that hold nothing and were not seen for a while.
-- KEYS: queue, slots, avg; ARGV: group, replica, seed average, forget after (ms)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms())
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(consumers) == 'table' and not consumers.err then
  for _, c in ipairs(consumers) do
    local name, pending, idle
    for i = 1, #c, 2 do
      if c[i] == 'name' then name = c[i + 1] end
      if c[i] == 'pending' then pending = c[i + 1] end
      if c[i] == 'idle' then idle = c[i + 1] end
    end
    if pending == 0 and idle > tonumber(ARGV[4]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    end
  end
end
local waiting = undelivered(KEYS[1], ARGV[1])
local here = 0
for _, e in ipairs(waiting) do
  if field(e, 'replica') == ARGV[2] then here = here + 1 end
end
return {#waiting, here, redis.call('ZCARD', KEYS[2]), redis.call('GET', KEYS[3]) or ARGV[3]}
