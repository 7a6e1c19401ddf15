-- Prelude prepended to every ledger script (ledger.py joins the files).
-- Keys of one upload share the hash tag {<ref>}, so a Redis Cluster keeps them in one slot.
-- The lease key holds "<epoch>|<connection id>|<channel name>" and expires on its own (PX).

-- Fencing (durability rule 9): a write is allowed only while the caller's epoch is the live
-- lease's epoch AND the record's current epoch. A holder that lost its lease, even one that
-- wakes up after someone else took over, fails here.
--
-- One exception, the reclaim: the lease expired (a Redis outage or a stalled process longer
-- than LEASE_TTL) but nobody acquired since (the record's epoch is still the caller's: every
-- acquire bumps it), nobody released it (holder still set) and the upload is still writable.
-- No other writer can have existed, so the caller's in-memory state is the truth: the lease
-- is re-created for it instead of throwing away a part in memory.
local function fence(meta_key, lease_key, epoch)
  local lease = redis.call('GET', lease_key)
  if not lease then
    local m = redis.call('HMGET', meta_key, 'epoch', 'holder', 'holder_channel', 'lease_ms',
                         'state')
    if m[1] == epoch and m[2] and m[2] ~= '' and m[4]
        and (m[5] == 'uploading' or m[5] == 'completing') then
      redis.call('SET', lease_key, epoch .. '|' .. m[2] .. '|' .. (m[3] or ''), 'PX', m[4])
      redis.call('HINCRBY', meta_key, 'reclaims', 1)
      return nil
    end
    return 'lease_lost'
  end
  local e = string.match(lease, '^(%d+)|')
  if e ~= epoch then return 'lease_lost' end
  if redis.call('HGET', meta_key, 'epoch') ~= epoch then return 'lease_lost' end
  return nil
end

local function refresh(ttl, ...)
  for _, k in ipairs({...}) do redis.call('EXPIRE', k, ttl) end
end
