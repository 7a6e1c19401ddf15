-- KEYS: meta, lease   ARGV: epoch, now_ms
-- Drops the lease if the caller still holds it. Returns 1 or 0.
if fence(KEYS[1], KEYS[2], ARGV[1]) then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'holder', '', 'holder_channel', '', 'updated', ARGV[2])
return 1
