-- llmguard: the budget ledger, one command per call, atomic (MemoryLedger's semantics).
--
-- KEYS (one hash tag, so one slot on a cluster):
--   [1] H  hash   'r' = sum of open reservations; 'h:<rid>' = msgpack {amount, hold, steps}
--   [2] E  zset   'h:<rid>' scored by when the reservation expires (it is open while
--                 NOW <= score); 'c:<rid>' scored by when a closed id is forgotten
--   [3] W  hash   '<wid>|s', '<wid>|t': start and total of a fixed or month window;
--                 '<wid>|t' the total of a forever or sliding window; '|forever' set
--                 once a forever window counts here (W then never expires)
--   [4] S  zset   sliding windows only: one '<amount>:<rid>' per settle, scored by time
-- ARGV: [1] time override ('' = TIME), [2] op (reserve, extend, settle, release, usage),
--   [3] reservation id, [4] amount, [5] limit ('' = none), [6] hold seconds,
--   [7] window id, [8] window kind ('c' calendar: fixed or month, 's' sliding,
--   'i' forever), [9] window seconds (0 when infinite), [10..12] for 'c': start, end
--   and next end of the window the client thinks holds NOW (the client computes
--   calendar and DST arithmetic; the script picks by the server's time).
-- Returns {status, used, reserved, reset_at, now}: status 1 ok, 0 refused, -1 when
-- NOW is outside both candidate windows (the client retries with bounds for `now`).

local H, E, W, S = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, rid = ARGV[2], ARGV[3]
local amount = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local hold = tonumber(ARGV[6])
local wid, kind = ARGV[7], ARGV[8]
local wsec = tonumber(ARGV[9])
local MIN_CLOSED_MEMORY = 3600

local wstart, wend
if kind == 'c' then
  local s, e, n = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
  if NOW >= s and NOW < e then
    wstart, wend = s, e
  elseif NOW >= e and NOW < n then
    wstart, wend = e, n
  else
    return {-1, 0, 0, '', fmt(NOW)}
  end
end

-- Drop expired reservations and forgotten closed ids.
local function prune()
  if redis.call('EXISTS', E) == 0 then
    redis.call('DEL', H)  -- nothing is open: only a stale total could be left
    return
  end
  local bound = '(' .. fmt(NOW)
  local dead = redis.call('ZRANGEBYSCORE', E, '-inf', bound)
  for _, member in ipairs(dead) do
    if string.sub(member, 1, 2) == 'h:' then
      local packed = redis.call('HGET', H, member)
      if packed then
        redis.call('HINCRBY', H, 'r', int(-cmsgpack.unpack(packed)[1]))
        redis.call('HDEL', H, member)
      end
    end
  end
  if #dead > 0 then
    redis.call('ZREMRANGEBYSCORE', E, '-inf', bound)
  end
end

local function keep_w(t)
  if redis.call('HEXISTS', W, '|forever') == 0 then
    keep_until(W, t)
  end
end

-- What was settled in the window holding NOW, and when that count resets.
local function compute_used()
  local total = wid .. '|t'
  if kind == 'i' then
    return tonumber(redis.call('HGET', W, total) or '0'), math.huge
  end
  if kind == 'c' then
    local v = redis.call('HMGET', W, wid .. '|s', total)
    if v[1] and tonumber(v[1]) == wstart then
      return tonumber(v[2]), wend
    end
    return 0, wend
  end
  if redis.call('EXISTS', S) == 0 then
    redis.call('HDEL', W, total)  -- every entry slid out and the key expired
    return 0, NOW + wsec
  end
  local cutoff = fmt(NOW - wsec)
  local old = redis.call('ZRANGEBYSCORE', S, '-inf', cutoff)
  if #old > 0 then
    local gone = 0
    for _, member in ipairs(old) do
      gone = gone + tonumber(string.match(member, '^(%d+):'))
    end
    redis.call('ZREMRANGEBYSCORE', S, '-inf', cutoff)
    redis.call('HINCRBY', W, total, int(-gone))
  end
  local first = redis.call('ZRANGE', S, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('HDEL', W, total)
    return 0, NOW + wsec
  end
  return tonumber(redis.call('HGET', W, total) or '0'), tonumber(first[2]) + wsec
end

-- Both figures are read once per script and kept up to date by the writes below.
local USED, RESET, RESERVED

local function used()
  if USED == nil then
    USED, RESET = compute_used()
  end
  return USED, RESET
end

local function reserved()
  if RESERVED == nil then
    RESERVED = tonumber(redis.call('HGET', H, 'r') or '0')
  end
  return RESERVED
end

local function fits(n)
  return used() + reserved() + n <= limit
end

local function reply(status)
  local u, reset = used()
  return {status, u, reserved(), fmt(reset), fmt(NOW)}
end

local function is_closed(id)
  return redis.call('ZSCORE', E, 'c:' .. id) ~= false
end

local function open_hold(id)
  local packed = redis.call('HGET', H, 'h:' .. id)
  if packed then
    return cmsgpack.unpack(packed)
  end
  return nil
end

local function write_hold(id, record, added)
  local expires = NOW + hold
  redis.call('HSET', H, 'h:' .. id, cmsgpack.pack(record))
  RESERVED = redis.call('HINCRBY', H, 'r', added)
  redis.call('ZADD', E, fmt(expires), 'h:' .. id)
  keep_until(H, expires)
  keep_until(E, expires)
end

-- Close `id` (its open record or nil) and remember it.
local function close(id, record)
  local longest = 0
  if record then
    redis.call('HDEL', H, 'h:' .. id)
    RESERVED = redis.call('HINCRBY', H, 'r', int(-record[1]))
    longest = record[2]
  end
  local forget = NOW + math.max(longest, wsec, MIN_CLOSED_MEMORY)
  redis.call('ZADD', E, fmt(forget), 'c:' .. id)
  keep_until(E, forget)
end

-- Count `n` (its text in ARGV[4]) as settled now, under `id`.
local function count(n, id)
  USED = nil
  local total = wid .. '|t'
  if kind == 's' then
    compute_used()  -- drop what slid out first, so members stay unique
    redis.call('ZADD', S, fmt(NOW), n .. ':' .. id)
    redis.call('HINCRBY', W, total, n)
    keep_until(S, NOW + wsec)
    keep_w(NOW + wsec)
  elseif kind == 'c' then
    local start = redis.call('HGET', W, wid .. '|s')
    if start and tonumber(start) == wstart then
      redis.call('HINCRBY', W, total, n)
    else
      redis.call('HSET', W, wid .. '|s', fmt(wstart), total, n)
    end
    keep_w(wend)
  else
    redis.call('HINCRBY', W, total, n)
    redis.call('HSET', W, '|forever', '1')
    redis.call('PERSIST', W)
  end
end

prune()

if op == 'reserve' then
  if redis.call('HEXISTS', H, 'h:' .. rid) == 1 or is_closed(rid) then
    return reply(1)
  end
  if not fits(amount) then
    return reply(0)
  end
  write_hold(rid, {amount, hold, {}}, ARGV[4])
  return reply(1)
elseif op == 'extend' then
  local base = string.match(rid, '^(.*)/')
  if base == nil or base == '' then
    base = rid
  end
  if is_closed(base) then
    return reply(1)
  end
  local record = open_hold(base)
  if record then
    for _, step in ipairs(record[3]) do
      if step == rid then
        return reply(1)
      end
    end
  end
  if not fits(amount) then
    return reply(0)
  end
  if not record then
    record = {0, hold, {}}
  end
  record[1] = record[1] + amount
  record[2] = math.max(record[2], hold)
  table.insert(record[3], rid)
  write_hold(base, record, ARGV[4])
  return reply(1)
elseif op == 'settle' then
  if not is_closed(rid) then
    close(rid, open_hold(rid))
    count(ARGV[4], rid)
  end
  return reply(1)
elseif op == 'release' then
  local record = open_hold(rid)
  if record then
    close(rid, record)
  end
  return reply(1)
elseif op == 'usage' then
  return reply(1)
end
return redis.error_reply('llmguard ledger: unknown op ' .. tostring(op))
