-- KEYS: meta, parts, events   ARGV: ttl, field1, value1, field2, value2, ...
-- Creates the record in state 'registered'. Returns 1, or 0 if the ref already exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('HSET', KEYS[1], 'state', 'registered', 'epoch', '0', 'parts_done', '0',
  'durable', '0', 'received', '0', 'crc', '0', 'tail_len', '0')
refresh(tonumber(ARGV[1]), KEYS[1])
return 1
