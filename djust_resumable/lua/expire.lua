-- KEYS: meta, lease   ARGV: cutoff_ms, now_ms, ttl, reason
-- The sweeper's transition to 'expired' (never fenced: the sweeper holds no lease). It only
-- expires a record that is still 'registered' or 'uploading', whose last ledger write
-- ('updated') is older than cutoff_ms, and that NO writer holds (no live lease): a writer that
-- is connected right now is never touched, and the check and the write are one atomic step,
-- so of several sweepers running at once exactly one gets 'ok'.
-- Returns {'ok', previous_state, key, upload_id, tail_key} | {'skip', reason}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'skip', 'not_found'} end
local m = redis.call('HMGET', KEYS[1], 'state', 'updated', 'key', 'upload_id', 'tail_key')
local state = m[1]
if state ~= 'registered' and state ~= 'uploading' then return {'skip', state or ''} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'skip', 'leased'} end
if (tonumber(m[2]) or 0) >= tonumber(ARGV[1]) then return {'skip', 'recent'} end
redis.call('HSET', KEYS[1], 'state', 'expired', 'error', ARGV[4], 'updated', ARGV[2],
  'holder', '', 'holder_channel', '')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {'ok', state, m[3] or '', m[4] or '', m[5] or ''}
