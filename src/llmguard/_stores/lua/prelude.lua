-- llmguard: the prelude of every script (RedisStore prepends it when it loads one).
--
-- ARGV[1] is the time override: '' (always, outside tests) reads the server's clock
-- with TIME, so every client agrees on the time whatever its own clock says. Tests
-- pass epoch seconds instead, to move time by hand (RedisStore._test_clock).
local NOW
if ARGV[1] ~= '' then
  NOW = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Keys outlive what they hold by this much, so that Redis never expires a key a
-- moment before the script would have judged its content expired.
local SLACK_MS = 1000

-- A float as text that reads back to the same double (Lua's tostring keeps 14 digits).
local function fmt(x)
  return string.format('%.17g', x)
end

-- An integer as text (Lua turns 1e15 into '1e+15', which Redis refuses as an integer).
local function int(x)
  return string.format('%d', x)
end

-- Milliseconds from NOW until `t` plus the slack (at least 1), for PEXPIRE.
local function ms_until(t)
  return int(math.max(1, math.ceil((t - NOW) * 1000) + SLACK_MS))
end

-- Make `key` live at least until `t` (store time): extend its expiry, never shorten it.
-- A key without an expiry gets one (callers never pass keys meant to persist).
local function keep_until(key, t)
  local ttl = redis.call('PTTL', key)
  if ttl == -2 then
    return
  end
  local ms = tonumber(ms_until(t))
  if ttl == -1 or ttl < ms then
    redis.call('PEXPIRE', key, ms)
  end
end
