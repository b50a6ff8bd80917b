-- llmguard: shared state for circuit breakers (MemoryStore's semantics).
--
-- KEYS[1]: a versioned value (hash 'v' value, 'n' version, 'x' expiry) or a counter
-- (hash 'c' count, 'x' expiry); values and counters use different keys.
-- ARGV: [1] time override, [2] op, then per op:
--   read; cas version value ttl ('' = none); incr amount ttl ('' = none).

local K, op = KEYS[1], ARGV[2]

local function expired(x)
  return x and NOW >= tonumber(x)
end

if op == 'read' then
  local v = redis.call('HMGET', K, 'v', 'n', 'x')
  if not v[1] then
    return false
  end
  if expired(v[3]) then
    redis.call('DEL', K)
    return false
  end
  return {v[1], tonumber(v[2])}
elseif op == 'cas' then
  local v = redis.call('HMGET', K, 'n', 'x')
  local current = 0
  if v[1] and not expired(v[2]) then
    current = tonumber(v[1])
  end
  if current ~= tonumber(ARGV[3]) then
    return 0
  end
  redis.call('DEL', K)
  redis.call('HSET', K, 'v', ARGV[4], 'n', int(current + 1))
  if ARGV[5] ~= '' then
    local until_ = NOW + tonumber(ARGV[5])
    redis.call('HSET', K, 'x', fmt(until_))
    redis.call('PEXPIRE', K, ms_until(until_))
  end
  return 1
elseif op == 'incr' then
  local v = redis.call('HMGET', K, 'c', 'x')
  if not v[1] or expired(v[2]) then
    redis.call('DEL', K)
    if ARGV[4] ~= '' then
      local until_ = NOW + tonumber(ARGV[4])
      redis.call('HSET', K, 'x', fmt(until_))
      redis.call('PEXPIRE', K, ms_until(until_))
    end
  end
  return redis.call('HINCRBY', K, 'c', ARGV[3])
end
return redis.error_reply('llmguard state: unknown op ' .. tostring(op))
