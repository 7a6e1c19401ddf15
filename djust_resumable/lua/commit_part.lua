-- KEYS: meta, parts, lease   ARGV: epoch, number, part_json, crc_end, ttl, now_ms
-- Records a part that is already stored (durability rule 1: storage, then ledger, then ack),
-- then advances the durable offset over the contiguous prefix of parts. crc_end is the CRC32C
-- of the file's bytes [0, end of this part), so any worker continues the running CRC.
-- Returns {'ok', durable, crc, superseded_tail_key} | {'lease_lost'} | {'invalid_state', s}.
local f = fence(KEYS[1], KEYS[3], ARGV[1])
if f then return {f} end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'uploading' then return {'invalid_state', state} end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3], 'c' .. ARGV[2], ARGV[4])
redis.call('HDEL', KEYS[2], 'p' .. ARGV[2])  -- recorded now: no longer pending (part_sent)
local m = redis.call('HMGET', KEYS[1], 'part_size', 'size', 'parts_done', 'tail_offset',
  'tail_len', 'tail_key', 'tail_crc', 'crc')
local part_size, size, done = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
local start_done = done
while redis.call('HEXISTS', KEYS[2], tostring(done + 1)) == 1 do done = done + 1 end
local durable = math.min(done * part_size, size)
local crc = m[8]
if done > start_done then crc = redis.call('HGET', KEYS[2], 'c' .. done) end
local old_tail = ''
local tail_len = tonumber(m[5] or '0') or 0
if tail_len > 0 then
  local tail_end = tonumber(m[4]) + tail_len
  if tail_end <= durable then
    old_tail = m[6] or ''
    redis.call('HSET', KEYS[1], 'tail_len', '0', 'tail_key', '', 'tail_offset', '', 'tail_crc', '')
  else
    durable = tail_end
    crc = m[7]
  end
end
redis.call('HSET', KEYS[1], 'parts_done', done, 'durable', string.format('%d', durable),
  'crc', crc, 'updated', ARGV[6])
refresh(tonumber(ARGV[5]), KEYS[1], KEYS[2])
return {'ok', string.format('%d', durable), crc, old_tail}
