-- KEYS: events   ARGV: item (JSON), kept, ttl
-- Appends to the upload's timeline, keeping at most `kept` entries. When full, the oldest
-- `part_stored` entry goes first: a multi-GB upload stores thousands of parts, and plain
-- trimming would push out the milestones (registered, attached on worker X, spilled, ...)
-- that tell who held the upload. Recent part entries stay (the admin's throughput uses them).
redis.call('RPUSH', KEYS[1], ARGV[1])
local kept = tonumber(ARGV[2])
local n = redis.call('LLEN', KEYS[1])
if n > kept then
  local items = redis.call('LRANGE', KEYS[1], 0, n - 2)
  local dropped = false
  for _, it in ipairs(items) do
    if string.find(it, '"event":"part_stored"', 1, true) then
      redis.call('LREM', KEYS[1], 1, it)
      dropped = true
      break
    end
  end
  if not dropped then redis.call('LTRIM', KEYS[1], -kept, -1) end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
