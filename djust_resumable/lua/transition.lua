-- KEYS: meta, lease, parts   ARGV: epoch ('' = unfenced), from_states (comma list), to_state,
--                                   ttl, now_ms, field1, value1, ...
-- Moves the state machine atomically; idempotent: asking for the state it is already in
-- answers 'already' and writes nothing.
-- Returns {'ok', previous} | {'already', state} | {'invalid_state', state} | {'not_found'} |
--         {'lease_lost'}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found'} end
local state = redis.call('HGET', KEYS[1], 'state')
if state == ARGV[3] then return {'already', state} end
if ARGV[1] ~= '' then
  local f = fence(KEYS[1], KEYS[2], ARGV[1])
  if f then return {f} end
end
local allowed = false
for s in string.gmatch(ARGV[2], '[^,]+') do
  if s == state then allowed = true end
end
if not allowed then return {'invalid_state', state} end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'updated', ARGV[5])
if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
refresh(tonumber(ARGV[4]), KEYS[1], KEYS[3])
return {'ok', state}
