-- Prelude prepended to every ledger script (ledger.py joins the files).
-- Keys of one upload share the hash tag {<ref>}, so a Redis Cluster keeps them in one slot.
-- The lease key holds "<epoch>|<connection id>|<channel name>" and expires on its own (PX).

-- Fencing (durability rule 9): a write is allowed only while the caller's epoch is the live
-- lease's epoch AND the record's current epoch. A holder that lost its lease, even one that
-- wakes up after someone else took over, fails here.
local function fence(meta_key, lease_key, epoch)
  local lease = redis.call('GET', lease_key)
  if not lease then return 'lease_lost' end
  local e = string.match(lease, '^(%d+)|')
  if e ~= epoch then return 'lease_lost' end
  if redis.call('HGET', meta_key, 'epoch') ~= epoch then return 'lease_lost' end
  return nil
end

local function refresh(ttl, ...)
  for _, k in ipairs({...}) do redis.call('EXPIRE', k, ttl) end
end
