"""The Lua scripts that change a session and its indexes in one atomic step.

Redis runs a script without interleaving any other command, so a sweep cannot
deactivate a session halfway through a heartbeat, and two concurrent opens
with one client key cannot both create a session. Python builds every key
name that contains a user id, an agent name or a client key (the components
are URL-encoded there); the scripts derive only the names made of the key
prefix and a UUID (``session:``, ``chat:``, ``live:``).

A session hash holds the :class:`~chatwright.stores.ChatSession` fields plus
two internal ones: ``_member``, its member in the ``active`` sorted set, and
``_slot``, the name of its client-key key when it was opened with one.
Timestamps are integer microseconds since the epoch, in the hash and as
sorted-set scores alike.

The scripts whose answer says what the call changed (open, deactivate, sweep)
take a token of the call's own and keep what they did under ``reply:{token}``
for a minute: the session ids and the flag, never a session's fields. A client
whose connection dropped before the answer came sends the same call again and
gets the same answer (the sessions as they are now), instead of the answer of a
call that found the work done. The others change nothing a second run would
change differently (their timestamps come with the call).
"""

from __future__ import annotations

# Shared by the scripts below. ``f`` is HMGET of FIELDS.
_LIBRARY = """
local FIELDS = {'user_id', 'is_active', '_member', '_slot', 'chat_id', 'id'}

local function fields(key)
  return redis.call('HMGET', key, unpack(FIELDS))
end

-- Make a session the latest written: updated_at, the key's TTL, its place in
-- the user's index and, while active, in the active set.
local function touch(prefix, key, f, user_index, active, now, ttl)
  redis.call('HSET', key, 'updated_at', now)
  redis.call('PEXPIRE', key, ttl)
  redis.call('ZADD', user_index, now, f[6])
  redis.call('PEXPIRE', user_index, ttl)
  if f[2] == '1' then
    redis.call('ZADD', active, now, f[3])
    redis.call('PEXPIRE', prefix .. 'live:' .. f[5], ttl)
    if f[4] and redis.call('GET', f[4]) == f[6] then
      redis.call('PEXPIRE', f[4], ttl)
    end
  end
end

-- What a call with this token did, decoded, or nil when no call had it.
local function replayed(prefix, token)
  local kept = redis.call('GET', prefix .. 'reply:' .. token)
  if kept then
    return cjson.decode(kept)
  end
  return nil
end

-- Keep what a call did (ids and flags only) under its token for a minute: its retry
-- comes within that.
local function done(prefix, token, what)
  redis.call('SET', prefix .. 'reply:' .. token, cjson.encode(what), 'PX', 60000)
end

-- Drop an active session from every index of active sessions.
local function release(prefix, f, active)
  redis.call('ZREM', active, f[3])
  redis.call('SREM', prefix .. 'live:' .. f[5], f[6])
  if f[4] and redis.call('GET', f[4]) == f[6] then
    redis.call('DEL', f[4])
  end
end
"""

OPEN = (
    _LIBRARY
    + """
-- KEYS: session, latest, active, user index[, client-key slot]
-- ARGV: prefix, id, explicit chat id or '', fresh chat id, owner, now, ttl,
--       active member, trim cutoff, the call's token, then the remaining
--       field/value pairs of the hash. Entries of the user index older than
--       the trim cutoff belong to sessions whose keys have expired.
local prefix, id, explicit, fresh = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local owner, now, ttl, member = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local token = ARGV[10]
local again = replayed(prefix, token)
if again then
  return {again[1], redis.call('HGETALL', prefix .. 'session:' .. again[2])}
end
if explicit ~= '' then
  local current = redis.call('GET', prefix .. 'chat:' .. explicit)
  if current and current ~= owner then
    return {'owner', current}
  end
end
local slot = KEYS[5]
if slot and not redis.call('SET', slot, id, 'NX', 'PX', ttl) then
  -- Another open with this client key won: return its session while active.
  local winner = prefix .. 'session:' .. redis.call('GET', slot)
  if redis.call('HGET', winner, 'is_active') == '1' then
    done(prefix, token, {'existing', redis.call('GET', slot)})
    return {'existing', redis.call('HGETALL', winner)}
  end
  redis.call('SET', slot, id, 'PX', ttl)
end
local chat = explicit
if chat == '' then
  chat = redis.call('GET', KEYS[2]) or fresh
end
redis.call('SET', prefix .. 'chat:' .. chat, owner, 'NX')
redis.call('SET', KEYS[2], chat)
redis.call('HSET', KEYS[1], 'id', id, 'chat_id', chat, 'is_active', '1', 'created_at', now,
  'updated_at', now, '_member', member, unpack(ARGV, 11))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[3], now, member)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[9])
redis.call('ZADD', KEYS[4], now, id)
redis.call('PEXPIRE', KEYS[4], ttl)
redis.call('SADD', prefix .. 'live:' .. chat, id)
redis.call('PEXPIRE', prefix .. 'live:' .. chat, ttl)
done(prefix, token, {'created', id})
return {'created', redis.call('HGETALL', KEYS[1])}
"""
)

HEARTBEAT = (
    _LIBRARY
    + """
-- KEYS: session, user index, active.  ARGV: prefix, user id, now, ttl.
local f = fields(KEYS[1])
if f[1] ~= ARGV[2] then
  return false
end
touch(ARGV[1], KEYS[1], f, KEYS[2], KEYS[3], ARGV[3], ARGV[4])
return redis.call('HGETALL', KEYS[1])
"""
)

DEACTIVATE = (
    _LIBRARY
    + """
-- KEYS: session, user index, active.  ARGV: prefix, user id, now, ttl, token.
-- Returns {1 when this call deactivated it, else 0; the session's fields}.
local again = replayed(ARGV[1], ARGV[5])
if again then
  return {again[1], redis.call('HGETALL', KEYS[1])}
end
local f = fields(KEYS[1])
if f[1] ~= ARGV[2] then
  return false
end
local closed = 0
if f[2] == '1' then
  release(ARGV[1], f, KEYS[3])
  redis.call('HSET', KEYS[1], 'is_active', '0')
  f[2] = '0'
  closed = 1
end
touch(ARGV[1], KEYS[1], f, KEYS[2], KEYS[3], ARGV[3], ARGV[4])
done(ARGV[1], ARGV[5], {closed})
return {closed, redis.call('HGETALL', KEYS[1])}
"""
)

TOUCH_CHAT = (
    _LIBRARY
    + """
-- KEYS: the chat's live set, user index, active.  ARGV: prefix, user id, now, ttl.
local touched = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. 'session:' .. id
  local f = fields(key)
  if f[2] ~= '1' then
    redis.call('SREM', KEYS[1], id)
  elseif f[1] == ARGV[2] then
    touch(ARGV[1], key, f, KEYS[2], KEYS[3], ARGV[3], ARGV[4])
    touched = touched + 1
  end
end
return touched
"""
)

SWEEP = (
    _LIBRARY
    + """
-- KEYS: active.  ARGV: prefix, cutoff (exclusive), most members to look at, token.
-- Returns {members looked at, {hash of each deactivated session...}}.
local again = replayed(ARGV[1], ARGV[4])
if again then
  local swept = {}
  for _, id in ipairs(again[2]) do
    local fields = redis.call('HGETALL', ARGV[1] .. 'session:' .. id)
    if #fields > 0 then
      swept[#swept + 1] = fields
    end
  end
  return {again[1], swept}
end
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2],
  'LIMIT', 0, ARGV[3])
local swept, ids = {}, {}
for _, member in ipairs(members) do
  local key = ARGV[1] .. 'session:' .. string.sub(member, -36)
  local f = fields(key)
  if f[2] == '1' then
    release(ARGV[1], f, KEYS[1])
    redis.call('HSET', key, 'is_active', '0')
    swept[#swept + 1] = redis.call('HGETALL', key)
    ids[#ids + 1] = f[6]
  else
    -- The session's key expired before any sweep: only its member was left.
    redis.call('ZREM', KEYS[1], member)
  end
end
done(ARGV[1], ARGV[4], {#members, ids})
return {#members, swept}
"""
)
