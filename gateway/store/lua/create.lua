-- New jobs, each with its first event, and for those that queue their edit and queue entry, in
-- one write; only if the model's queue has room for every one of them that queues (else none).
-- A job ended before it could queue (mode 'record': a batch item refused at the door) is stored
-- with its final event alone. A job whose id exists, or whose Idempotency-Key record names
-- another, is answered with that id and not created.
-- The uploads are blobs, each stored once with a count of the unfinished jobs that refer to it
-- (a batch's variations share one); apply.lua drops a blob when the last of them finishes.
-- KEYS: queue, slots, then per blob: blob, refs; then per job: job, events, request,
--       [idempotency record]
-- ARGV: ttl, group, submitting replica, channel, max depth (-1: no room check), limit, count,
--       blob count b, b blob datas,
--       then per job: id, mode ('queue' | 'record'), event name, event data, has record (0|1),
--       n, n job field/value items, m, m request items, r, r blob indexes it refers to
-- Returns {'full', room left, waiting, running} or {'ok', status, id, status, id, ...} with
-- each status 'created', 'exists' or 'replayed'.
local queue, slots = KEYS[1], KEYS[2]
local ttl, group, replica, channel = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local max_depth, limit = tonumber(ARGV[5]), tonumber(ARGV[6])

local blob_count = tonumber(ARGV[8])
local blobs = {}
for i = 1, blob_count do
  blobs[i] = {key = KEYS[1 + 2 * i], refs = KEYS[2 + 2 * i], data = ARGV[8 + i], count = 0}
end
local jobs, k, a = {}, 3 + 2 * blob_count, 9 + blob_count
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
  local r = tonumber(ARGV[a])
  job.blobs = {}
  for i = 1, r do job.blobs[i] = tonumber(ARGV[a + i]) end
  a = a + 1 + r
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

-- Reads only until the first write, a SET or HSET that Redis refuses when it is out of memory:
-- once a script has written, Redis lets it write on past maxmemory.
if queued > 0 and max_depth >= 0 then
  local running = redis.call('ZCOUNT', slots, '(' .. now_ms(), '+inf')  -- unexpired leases
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
      for _, i in ipairs(job.blobs) do blobs[i].count = blobs[i].count + 1 end
    end
    redis.call('EXPIRE', job.key, ttl)
    redis.call('EXPIRE', job.events, ttl)
    redis.call('EXPIRE', job.request, ttl)
    answers[j] = {'created', job.id}
  end
end

for _, blob in ipairs(blobs) do
  if blob.count > 0 then
    redis.call('SET', blob.key, blob.data, 'NX')
    redis.call('INCRBY', blob.refs, blob.count)
    redis.call('EXPIRE', blob.key, ttl)
    redis.call('EXPIRE', blob.refs, ttl)
  end
end

local reply = {'ok'}
for _, answer in ipairs(answers) do
  reply[#reply + 1] = answer[1]
  reply[#reply + 1] = answer[2]
end
return reply
