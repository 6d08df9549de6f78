-- New jobs, each with its first event, and for those that queue their edit and queue entry, in
-- one write; only if the model's queue has room for every one of them that queues (else none).
-- A job ended before it could queue (mode 'record': a batch item refused at the door) is stored
-- with its final event alone. A job whose id exists, or whose Idempotency-Key record names
-- another, is answered with that id and not created.
-- KEYS: queue, slots, then per job: job, events, request, [idempotency record]
-- ARGV: ttl, group, submitting replica, channel, max depth (-1: no room check), limit, count,
--       then per job: id, mode ('queue' | 'record'), event name, event data, has record (0|1),
--       n, n job field/value items, m, m request items
-- Returns {'full', room left, waiting, running} or {'ok', status, id, status, id, ...} with
-- each status 'created', 'exists' or 'replayed'.
local queue, slots = KEYS[1], KEYS[2]
local ttl, group, replica, channel = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local max_depth, limit = tonumber(ARGV[5]), tonumber(ARGV[6])

local jobs, k, a = {}, 3, 8
for j = 1, tonumber(ARGV[7]) do
  local job = {key = KEYS[k], events = KEYS[k + 1], request = KEYS[k + 2]}
  k = k + 3
  job.id, job.mode, job.event, job.data = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  if ARGV[a + 4] == '1' then
    job.record = KEYS[k]
    k = k + 1
  end
  local n = tonumber(ARGV[a + 5])
  job.first, job.last = a + 6, a + 5 + n
  a = a + 6 + n
  local m = tonumber(ARGV[a])
  job.edit_first, job.edit_last = a + 1, a + m
  a = a + 1 + m
  jobs[j] = job
end

local answers, queued = {}, 0
for j, job in ipairs(jobs) do
  local named = job.record and redis.call('GET', job.record)
  if redis.call('EXISTS', job.key) == 1 then
    answers[j] = {'exists', job.id}
  elseif named then
    answers[j] = {'replayed', named}
  elseif job.mode == 'queue' then
    queued = queued + 1
  end
end

if queued > 0 and max_depth >= 0 then
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now_ms())
  local running = redis.call('ZCARD', slots)
  local waiting = #undelivered(queue, group)
  local room = math.max(0, max_depth - waiting + math.max(0, limit - running))
  if queued > room then return {'full', room, waiting, running} end
end

for j, job in ipairs(jobs) do
  if not answers[j] then
    if job.record then
      redis.call('SET', job.record, job.id, 'EX', ttl)
    end
    redis.call('HSET', job.key, unpack(ARGV, job.first, job.last))
    if job.record then redis.call('HSET', job.key, '_idem', job.record) end
    redis.call('XADD', job.events, '1-0', 'event', job.event, 'data', job.data)
    redis.call('PUBLISH', channel, cjson.encode(
      {job = job.id, id = 1, event = job.event, data = job.data}))
    if job.mode == 'queue' then
      redis.call('HSET', job.request, unpack(ARGV, job.edit_first, job.edit_last))
      redis.pcall('XGROUP', 'CREATE', queue, group, '0', 'MKSTREAM')
      local entry = redis.call('XADD', queue, '*', 'job', job.id, 'replica', replica)
      redis.call('HSET', job.key, '_entry', entry)
    end
    redis.call('EXPIRE', job.key, ttl)
    redis.call('EXPIRE', job.events, ttl)
    redis.call('EXPIRE', job.request, ttl)
    answers[j] = {'created', job.id}
  end
end

local reply = {'ok'}
for _, answer in ipairs(answers) do
  reply[#reply + 1] = answer[1]
  reply[#reply + 1] = answer[2]
end
return reply
