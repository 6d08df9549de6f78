-- Helpers shared by the queue scripts (prepended to each of them).
local function last_delivered(queue, group)
  local groups = redis.pcall('XINFO', 'GROUPS', queue)
  if type(groups) ~= 'table' or groups.err then return nil end
  for _, g in ipairs(groups) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == group then return last end
  end
  return nil
end

-- Entries not yet delivered to any runner, oldest first (at most `count` when given).
local function undelivered(queue, group, count)
  local last = last_delivered(queue, group)
  local start = '-'
  if last then start = '(' .. last end
  if count then return redis.call('XRANGE', queue, start, '+', 'COUNT', count) end
  return redis.call('XRANGE', queue, start, '+')
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function field(entry, name)
  for i = 1, #entry[2], 2 do
    if entry[2][i] == name then return entry[2][i + 1] end
  end
  return nil
end

local function wake(key)
  redis.call('LPUSH', key, '1')
  redis.call('LTRIM', key, 0, 15)
  redis.call('EXPIRE', key, 60)
end

local function owner(queue, group, entry)
  local pending = redis.call('XPENDING', queue, group, entry, entry, 1)
  if #pending == 0 then return nil end
  return pending[1][2]
end
