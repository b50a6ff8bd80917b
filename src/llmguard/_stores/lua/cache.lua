-- llmguard: the cache's single-flight locks (MemoryStore's semantics).
--
-- (Cache values need no script: each is a plain string with Redis's own expiry,
-- SET ... PX and GET, one command each; see redis.py.)
-- KEYS[1]: a lock (hash 't' token, 'x' expiry); locks and values use different keys,
-- so a lock and a value may share a name. The expiry is kept in the hash and judged
-- against NOW, so the store's clock decides; PEXPIRE (with slack) only frees the
-- memory afterwards.
-- ARGV: [1] time override, [2] op, then per op: lock token ttl; unlock token.
-- Each is idempotent, so the client may resend one after a dropped connection.

local K, op = KEYS[1], ARGV[2]

if op == 'lock' then
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
