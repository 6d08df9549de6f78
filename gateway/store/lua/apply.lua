-- Change a job's fields, append its event and store its result, in one write.
-- KEYS: job, events, result, request, control
-- ARGV[1]: JSON {ttl, result_ttl, job, channel, blob_prefix, expect = {field = [encoded
--          values]}, event?, data?, finished, has_result}
-- A finished job's blob keys (qie:blob:<sha256>) are named by its request, not in KEYS: this
-- store runs on one Redis, never a cluster.
-- ARGV[2]: the result bytes (or ''), ARGV[3..]: field, value, ...
local opts = cjson.decode(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
for field, allowed in pairs(opts.expect) do
  local current = redis.call('HGET', KEYS[1], field)
  local holds = false
  for _, value in ipairs(allowed) do
    if current == value then holds = true end
  end
  if not holds then return {'conflict'} end
end
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
local event_id = 0
if opts.event then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  event_id = 1
  if #last > 0 then event_id = tonumber(string.match(last[1][1], '^(%d+)')) + 1 end
  redis.call('XADD', KEYS[2], event_id .. '-0', 'event', opts.event, 'data', opts.data)
  -- Every replica's event hub hands it to that replica's waiters (redis_events.py).
  redis.call('PUBLISH', opts.channel, cjson.encode(
    {job = opts.job, id = event_id, event = opts.event, data = opts.data}))
end
-- A result keeps its own, shorter expiry (RESULT_TTL_S): later writes do not extend it.
if opts.has_result then redis.call('SET', KEYS[3], ARGV[2], 'EX', opts.result_ttl) end
if opts.finished then
  -- The edit is of no more use: drop it, and each upload no unfinished job refers to any more.
  local request = redis.call('HGETALL', KEYS[4])
  for i = 2, #request, 2 do
    local digest = string.match(request[i], '^blob:(%x+)$')
    if digest then
      local blob = opts.blob_prefix .. digest
      if redis.call('DECR', blob .. ':refs') <= 0 then redis.call('DEL', blob, blob .. ':refs') end
    end
  end
  redis.call('DEL', KEYS[4])
end
for _, i in ipairs({1, 2, 4, 5}) do redis.call('EXPIRE', KEYS[i], opts.ttl) end
local idem = redis.call('HGET', KEYS[1], '_idem')
if idem then redis.call('EXPIRE', idem, opts.ttl) end
return {'ok', event_id, redis.call('HGETALL', KEYS[1])}
