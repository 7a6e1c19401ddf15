-- KEYS: meta, lease, parts   ARGV: epoch, tail_key, tail_offset, tail_len, tail_crc, ttl, now_ms
-- Records a spilled partial part (already stored as a temporary object). The tail must start
-- at the end of the stored parts and must not move the durable offset backwards.
-- Returns {'ok', durable, superseded_tail_key} | {'lease_lost'} | {'invalid_state', s} |
--         {'bad_tail', durable}.
local f = fence(KEYS[1], KEYS[2], ARGV[1])
if f then return {f} end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'uploading' then return {'invalid_state', state} end
local m = redis.call('HMGET', KEYS[1], 'part_size', 'parts_done', 'durable', 'tail_key')
local off, len = tonumber(ARGV[3]), tonumber(ARGV[4])
if off ~= tonumber(m[1]) * tonumber(m[2]) or off + len < tonumber(m[3]) then
  return {'bad_tail', m[3]}
end
local durable = string.format('%d', off + len)
redis.call('HSET', KEYS[1], 'tail_key', ARGV[2], 'tail_offset', ARGV[3], 'tail_len', ARGV[4],
  'tail_crc', ARGV[5], 'durable', durable, 'crc', ARGV[5], 'updated', ARGV[7])
redis.call('HINCRBY', KEYS[1], 'spills', 1)
refresh(tonumber(ARGV[6]), KEYS[1], KEYS[3])
local old = m[4] or ''
if old == ARGV[2] then old = '' end
return {'ok', durable, old}
