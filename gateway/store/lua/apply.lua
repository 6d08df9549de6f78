-- Change a job's fields, append its event and store its result, in one write.
-- KEYS: job, events, result, request, control
-- ARGV[1]: JSON {ttl, result_ttl, job, channel, expect = {field = [encoded values]}, event?,
--          data?, finished, has_result}
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
if opts.finished then redis.call('DEL', KEYS[4]) end
for _, i in ipairs({1, 2, 4, 5}) do redis.call('EXPIRE', KEYS[i], opts.ttl) end
local idem = redis.call('HGET', KEYS[1], '_idem')
if idem then redis.call('EXPIRE', idem, opts.ttl) end
return {'ok', event_id, redis.call('HGETALL', KEYS[1])}
