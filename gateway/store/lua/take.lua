-- Take the oldest job for a runner, if a global slot is free: first this consumer's own entries
-- from a previous life (when asked), then an entry whose runner stopped renewing its lease,
-- then a new one. The slot is a lease in a sorted set; expired leases are freed first.
-- KEYS: queue, slots, wake; ARGV: group, consumer, limit, lease ms, history cursor ('' = none)
-- Returns {'taken', entry id, job id, 'mine' | 'orphan' | 'new'}, {'busy', ms}, or {'empty'}.
local queue, slots = KEYS[1], KEYS[2]
local group, consumer = ARGV[1], ARGV[2]
local limit, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
redis.pcall('XGROUP', 'CREATE', queue, group, '0', 'MKSTREAM')

-- A deleted entry (its job was cancelled while queued) comes back without fields: ack it.
local function first_live(entries)
  for _, e in ipairs(entries) do
    if e[2] then return e end
    redis.call('XACK', queue, group, e[1])
  end
  return nil
end

local function taken(entry, source)
  local job = field(entry, 'job')
  redis.call('ZADD', slots, now + lease, job)
  return {'taken', entry[1], job, source}
end

-- Entries a previous life of this replica held keep their slots: take them back first.
if ARGV[5] ~= '' then
  local mine = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 10, 'STREAMS', queue, ARGV[5])
  local entry = nil
  if mine and mine[1] then entry = first_live(mine[1][2]) end
  if entry then return taken(entry, 'mine') end
end

redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
local held = redis.call('ZCARD', slots)
if held >= limit then
  local first = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
  return {'busy', tonumber(first[2]) - now}
end
local entry = nil
local source = 'orphan'
do
  local orphan = redis.call('XAUTOCLAIM', queue, group, consumer, lease, '0-0', 'COUNT', 1)
  entry = first_live(orphan[2])
end
if not entry then
  source = 'new'
  local new = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', queue, '>')
  if new and new[1] then entry = first_live(new[1][2]) end
end
if not entry then return {'empty'} end
-- Several slots may have freed at once: pass the word on while work and slots remain.
if held + 1 < limit and #undelivered(queue, group, 1) > 0 then wake(KEYS[3]) end
return taken(entry, source)
