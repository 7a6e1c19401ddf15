-- KEYS: meta, lease, parts   ARGV: epoch, lease_ms, ttl
-- Extends the lease and the record's TTL. Returns 1, or 'lease_lost'.
local f = fence(KEYS[1], KEYS[2], ARGV[1])
if f then return f end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
refresh(tonumber(ARGV[3]), KEYS[1], KEYS[3])
return 1
