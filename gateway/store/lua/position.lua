-- A waiting job's 1-based place among the entries not yet delivered (0: not waiting).
-- KEYS: job, queue; ARGV: group
local entry = redis.call('HGET', KEYS[1], '_entry')
if not entry then return 0 end
for place, e in ipairs(undelivered(KEYS[2], ARGV[1])) do
  if e[1] == entry then return place end
end
return 0
