-- Heartbeat of a running job: reset its entry's idle time and extend its slot's lease.
-- KEYS: queue, slots; ARGV: group, consumer, entry id, job id, lease ms
if owner(KEYS[1], ARGV[1], ARGV[3]) ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[5]), ARGV[4])
return 1
