-- A new job, its first event, its edit and its queue entry, in one write. A job that ended
-- before it could be queued (mode 'record') is stored with its final event alone.
-- KEYS: job, events, request, queue, [idempotency record]
-- ARGV: ttl, job id, group, submitting replica, event name, event data, mode ('queue' | 'record'),
--       n (the number of job field/value items that follow), items..., request items...
local ttl = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ARGV[2]} end
if KEYS[5] then
  local named = redis.call('GET', KEYS[5])
  if named then return {'replayed', named} end
  redis.call('SET', KEYS[5], ARGV[2], 'EX', ttl)
end
local n = tonumber(ARGV[8])
redis.call('HSET', KEYS[1], unpack(ARGV, 9, 8 + n))
if KEYS[5] then redis.call('HSET', KEYS[1], '_idem', KEYS[5]) end
redis.call('XADD', KEYS[2], '1-0', 'event', ARGV[5], 'data', ARGV[6])
if ARGV[7] == 'queue' then
  redis.call('HSET', KEYS[3], unpack(ARGV, 9 + n))
  redis.pcall('XGROUP', 'CREATE', KEYS[4], ARGV[3], '0', 'MKSTREAM')
  local entry = redis.call('XADD', KEYS[4], '*', 'job', ARGV[2], 'replica', ARGV[4])
  redis.call('HSET', KEYS[1], '_entry', entry)
end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
return {'created', ARGV[2]}
