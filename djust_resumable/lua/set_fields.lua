-- KEYS: meta, lease   ARGV: epoch, ttl, field1, value1, ...
-- Fenced write of informational fields (head bytes, received offset). Returns 1 or 'lease_lost'.
local f = fence(KEYS[1], KEYS[2], ARGV[1])
if f then return f end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
