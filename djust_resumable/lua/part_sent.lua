-- KEYS: meta, parts, lease   ARGV: epoch, number, size, crc_end, checksum, ttl
-- Notes that every byte of part `number` is here and its store request starts, before the
-- store answered. Not a durability claim (nothing is acknowledged from it): if this worker dies
-- before recording the part, the next writer asks the store (ListParts) whether the part
-- arrived, and adopts it with this CRC32C of the file's bytes [0, end of the part) instead
-- of making the client re-send it. Value: "<size> <crc_end> <checksum or ->".
-- Returns {'ok'} | {'lease_lost'} | {'invalid_state', s}.
local f = fence(KEYS[1], KEYS[3], ARGV[1])
if f then return {f} end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'uploading' then return {'invalid_state', state} end
redis.call('HSET', KEYS[2], 'p' .. ARGV[2], ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))
return {'ok'}
