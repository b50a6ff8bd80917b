-- llmguard: cache values and single-flight locks (MemoryStore's semantics).
--
-- KEYS[1]: a cache value (hash 'v' value, 'x' expiry) or a lock (hash 't' token,
-- 'x' expiry); values and locks use different keys, so a lock and a value may share
-- a name. The expiry is kept in the hash and judged against NOW, so the store's
-- clock decides; PEXPIRE (with slack) only frees the memory afterwards.
-- ARGV: [1] time override, [2] op, then per op:
--   get; set value ttl ('' = none); del; lock token ttl; unlock token.
-- Each is idempotent, so the client may resend one after a dropped connection.

local K, op = KEYS[1], ARGV[2]

if op == 'get' then
  local v = redis.call('HMGET', K, 'v', 'x')
  if not v[1] then
    return false
  end
  if v[2] and NOW >= tonumber(v[2]) then
    redis.call('DEL', K)
    return false
  end
  return v[1]
elseif op == 'set' then
  redis.call('DEL', K)
  if ARGV[4] == '' then
    redis.call('HSET', K, 'v', ARGV[3])
    return 1
  end
  local ttl = tonumber(ARGV[4])
  if ttl > 0 then
    redis.call('HSET', K, 'v', ARGV[3], 'x', fmt(NOW + ttl))
    redis.call('PEXPIRE', K, ms_until(NOW + ttl))
  end
  return 1
elseif op == 'del' then
  redis.call('DEL', K)
  return 1
elseif op == 'lock' then
  local v = redis.call('HMGET', K, 't', 'x')
  if v[2] and NOW < tonumber(v[2]) then
    if v[1] == ARGV[3] then
      return ARGV[3]  -- a resend of the command that took it (tokens are never reused)
    end
    return false
  end
  local until_ = NOW + tonumber(ARGV[4])
  redis.call('HSET', K, 't', ARGV[3], 'x', fmt(until_))
  redis.call('PEXPIRE', K, ms_until(until_))
  return ARGV[3]
elseif op == 'unlock' then
  local v = redis.call('HMGET', K, 't', 'x')
  if not v[1] or v[1] ~= ARGV[3] then
    return 0
  end
  redis.call('DEL', K)
  if NOW < tonumber(v[2]) then
    return 1
  end
  return 0
end
return redis.error_reply('llmguard cache: unknown op ' .. tostring(op))
