-- llmguard: the budget ledger, one command per call, atomic (MemoryLedger's semantics).
--
-- Every key of the ledger has four Redis keys (one hash tag, so one slot on a cluster):
--   H  hash   'r' = sum of open reservations; 'h:<rid>' = msgpack {amount, hold, steps}
--   E  zset   'h:<rid>' scored by when the reservation expires (it is open while
--             NOW <= score); 'c:<rid>' scored by when a closed id is forgotten
--   W  hash   '<wid>|s', '<wid>|t': start and total of a fixed or month window;
--             '<wid>|t' the total of a forever or sliding window; '|forever' set
--             once a forever window counts here (W then never expires)
--   S  zset   sliding windows only: one '<amount>:<rid>' per settle, scored by time
--
-- One key (reserve, extend, settle, release, usage): KEYS = H, E, W[, S].
-- ARGV: [1] time override ('' = TIME), [2] op, [3] reservation id, [4] amount,
--   [5] limit ('' = none), [6] hold seconds, [7] window id, [8] window kind
--   ('c' calendar: fixed or month, 's' sliding, 'i' forever), [9] window seconds
--   (0 when infinite), [10..12] for 'c': start, end and next end of the window the
--   client thinks holds NOW (the client computes calendar and DST arithmetic; the
--   script picks by the server's time).
-- Returns {status, used, reserved, reset_at, now}: status 1 ok, 0 refused, -1 when
-- NOW is outside both candidate windows (the client retries with bounds for `now`).
--
-- Several keys under one reservation id (BatchLedger), op 'reserve_many' (all or
-- none), 'settle_many' or 'drop_many' (forget the holds a reserve made, without
-- closing the id: a cluster's per-key fallback undoing what it held).
-- KEYS: each entry's H, E, W[, S] in turn. ARGV: [1] time override, [2] op,
--   [3] reservation id, [4] hold seconds, then 10 per entry: the number of its
--   keys (3 or 4), its op (reserve, settle, release, drop), amount, limit, and
--   ARGV[7..12] of one key.
-- Returns {now, then status, used, reserved, reset_at per entry}, status 2 for a
-- hold made by this command, 1 ok, 0 refused (the last entry answered), or
-- {-1, now} when NOW is outside an entry's candidate windows (nothing changed).

local MIN_CLOSED_MEMORY = 3600

-- The entry the functions below work on (set by `entry`).
local H, E, W, S, limit, hold, wid, kind, wsec, wstart, wend
-- Figures read once per entry and kept up to date by the writes below.
local USED, RESET, RESERVED
-- Whether the last `run` made a new hold.
local MADE

-- Point the functions below at one key; false when NOW is in neither candidate window.
local function entry(h, e, w, s, lim, hld, id, k, sec, a, b, c)
  H, E, W, S = h, e, w, s
  limit, hold = tonumber(lim), tonumber(hld)
  wid, kind, wsec = id, k, tonumber(sec)
  USED, RESET, RESERVED, MADE = nil, nil, nil, false
  wstart, wend = nil, nil
  if kind == 'c' then
    local start, stop, following = tonumber(a), tonumber(b), tonumber(c)
    if NOW >= start and NOW < stop then
      wstart, wend = start, stop
    elseif NOW >= stop and NOW < following then
      wstart, wend = stop, following
    else
      return false
    end
  end
  return true
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

-- Forget the open hold of `id` without closing it (undoing a reserve).
local function drop(id)
  local record = open_hold(id)
  if record then
    redis.call('HDEL', H, 'h:' .. id)
    RESERVED = redis.call('HINCRBY', H, 'r', int(-record[1]))
    redis.call('ZREM', E, 'h:' .. id)
  end
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

-- Count `n` (the amount's text) as settled now, under `id`.
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

-- One command on the current entry: its reply, or nil for an unknown op.
local function run(op, rid, text)
  local amount = tonumber(text)
  prune()
  if op == 'reserve' then
    if redis.call('HEXISTS', H, 'h:' .. rid) == 1 or is_closed(rid) then
      return reply(1)
    end
    if not fits(amount) then
      return reply(0)
    end
    write_hold(rid, {amount, hold, {}}, text)
    MADE = true
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
    write_hold(base, record, text)
    return reply(1)
  elseif op == 'settle' then
    if not is_closed(rid) then
      close(rid, open_hold(rid))
      count(text, rid)
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
  return nil
end

local command = ARGV[2]

if command ~= 'reserve_many' and command ~= 'settle_many' and command ~= 'drop_many' then
  if not entry(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8],
      ARGV[9], ARGV[10], ARGV[11], ARGV[12]) then
    return {-1, 0, 0, '', fmt(NOW)}
  end
  local answer = run(command, ARGV[3], ARGV[4])
  if answer == nil then
    return redis.error_reply('llmguard ledger: unknown op ' .. tostring(command))
  end
  return answer
end

-- Several keys: each entry's keys and arguments, all windows checked before any write.
local rid, hold_text = ARGV[3], ARGV[4]
local entries = {}
local k, a = 1, 5
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local s = nil
  if n == 4 then
    s = KEYS[k + 3]
  end
  local args = {KEYS[k], KEYS[k + 1], KEYS[k + 2], s, ARGV[a + 3], hold_text,
    ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9]}
  local op = ARGV[a + 1]
  if op ~= 'reserve' and op ~= 'settle' and op ~= 'release' and op ~= 'drop' then
    return redis.error_reply('llmguard ledger: unknown op ' .. tostring(op))
  end
  if not entry(unpack(args, 1, 12)) then
    return {-1, fmt(NOW)}
  end
  entries[#entries + 1] = {args, ARGV[a + 1], ARGV[a + 2]}
  k, a = k + n, a + 10
end

local out = {fmt(NOW)}
local made = {}
for _, item in ipairs(entries) do
  local args, op, text = item[1], item[2], item[3]
  entry(unpack(args, 1, 12))
  local answer
  if op == 'drop' then
    prune()
    drop(rid)
    answer = reply(1)
  else
    answer = run(op, rid, text)
  end
  if MADE then
    answer[1] = 2
    made[#made + 1] = args
  end
  for i = 1, 4 do
    out[#out + 1] = answer[i]
  end
  if answer[1] == 0 then  -- all or none: undo the holds this command made
    for _, held in ipairs(made) do
      entry(unpack(held, 1, 12))
      drop(rid)
    end
    return out
  end
end
return out
