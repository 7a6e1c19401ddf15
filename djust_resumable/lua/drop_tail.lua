-- KEYS: meta, lease, parts   ARGV: epoch, ttl, now_ms
-- Forgets a spilled tail whose object is gone (deleted by hand, lost by the store): the
-- durable offset falls back to the end of the stored parts, so the client re-sends the
-- tail's bytes instead of the upload being wedged. Returns {'ok', durable, crc} | {'lease_lost'}.
local f = fence(KEYS[1], KEYS[2], ARGV[1])
if f then return {f} end
local m = redis.call('HMGET', KEYS[1], 'part_size', 'size', 'parts_done')
local done = tonumber(m[3])
local durable = math.min(done * tonumber(m[1]), tonumber(m[2]))
local crc = '0'
if done > 0 then crc = redis.call('HGET', KEYS[3], 'c' .. done) end
redis.call('HSET', KEYS[1], 'tail_len', '0', 'tail_key', '', 'tail_offset', '', 'tail_crc', '',
  'durable', string.format('%d', durable), 'crc', crc, 'updated', ARGV[3])
refresh(tonumber(ARGV[2]), KEYS[1], KEYS[3])
return {'ok', string.format('%d', durable), crc}
