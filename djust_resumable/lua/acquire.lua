-- KEYS: meta, lease, parts   ARGV: conn_id, channel, lease_ms, ttl, now_ms
-- Takes the writer lease (durability rule 4) and bumps the epoch.
-- Returns {'ok', epoch} | {'busy', holder_channel, holder_epoch} | {'not_found'} |
--         {'state', state} when the upload is no longer writable.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found'} end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'registered' and state ~= 'uploading' and state ~= 'completing' then
  return {'state', state}
end
local cur = redis.call('GET', KEYS[2])
if cur then
  local e, c, ch = string.match(cur, '^(%d+)|([^|]*)|(.*)$')
  if c ~= ARGV[1] then return {'busy', ch, e} end
end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('SET', KEYS[2], epoch .. '|' .. ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
if state == 'registered' then redis.call('HSET', KEYS[1], 'state', 'uploading') end
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'holder_channel', ARGV[2], 'updated', ARGV[5],
  'lease_ms', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'attaches', 1)
refresh(tonumber(ARGV[4]), KEYS[1], KEYS[3])
return {'ok', tostring(epoch)}
