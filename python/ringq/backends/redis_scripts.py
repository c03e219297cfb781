"""The Lua scripts of the Redis backend (``ringq.backends.redis``).

Every operation that touches more than one key is one script, so it is
atomic on the server. A namespace's keys share the hash tag ``{namespace}``
(one slot: a namespace works unchanged on Redis Cluster); each script gets
the namespace's ``meta`` key as ``KEYS[1]`` (which routes it to the slot's
node) and builds the others from the prefix in ``ARGV[1]``. ``ARGV[2]`` is
the client's clock in microseconds (so tests inject time, and every client
judges leases and delays by the same argument it sends).

Keys under the prefix ``ringq:{ns}:``:

- ``meta``: hash ``instance`` (16 hex digits), ``capacity``,
  ``max_attempts``, ``dlq_capacity``;
- ``seq`` / ``tok``: counters for message ids and lease tokens;
- ``m:<id>``: a live message (hash: ``t`` topic, ``p`` payload, ``a``
  deliveries that ended (absent: 0; one in flight is delivery ``a`` + 1,
  counted when its lease ends), ``v`` version (absent: 1), ``k`` dedup
  key, ``h`` headers, ``c``/``z`` correlation/causation id, ``e`` enqueued
  at, ``tok`` lease token (only while in flight), ``due`` (delayed),
  ``sup`` superseded, ``ff`` first failed at, ``pr`` priority 1..9 (absent:
  0), ``o`` ordering key, ``dw`` dedup window in microseconds (with ``k``)).
  Every field written costs the server about as much as a command, so a
  message gets only the fields it needs: whether it is ready or delayed is
  known from where its id is;
- ``r:<topic>``: the topic's ready ids of priority 0, first to be delivered
  on the left (an id with an ordering key is listed as ``<id>o``, so a
  checkout reads the key of those only, and gives them a lease token from
  2^52 on, so an ack reads it of those only); ``r<p>:<topic>`` (p 1..9): those of
  priority p; ``rp:<topic>``: a bitmap (string, bit p) of the priorities
  whose list may hold ids, set when an id is pushed onto one, cleared by a
  checkout that finds it empty and deleted with the last: a checkout of a
  topic with only priority 0 reads one missing key instead of nine lists;
- ``o:<topic> NUL <key>``: an ordering key's line, the ids of its live
  messages in publish order. The first (the head) is the only one that may
  be listed or in flight; a ready one behind it is *parked*: counted ready
  (``n`` field ``<topic> NUL o`` counts them per topic), on no list, listed
  when it becomes the head (``unkey``);
- ``u:<topic> NUL <key>``: a dedup window opened by an ack: string
  ``<until> <id>`` (until: the client clock, microseconds), with a
  real-time expiry (PX) of the window plus ``WINDOW_SLACK_MS`` so Redis drops
  it by itself once it is over; a publish of the key before ``until``
  answers with the id and enqueues nothing (one met after it is deleted);
- ``delayed`` / ``leases``: sorted sets of ids by due time / lease deadline
  (``leases`` also holds 129 members ``~pad<n>`` at +inf, see ``add_leases``);
- ``dedup``: hash ``<topic> NUL <key>`` -> the id holding the key;
- ``dlq``: dead letters' ids, oldest first; ``x:<id>``: a dead letter (the
  message's fields plus ``reason``, ``et``/``em``/``tb``/``hd`` error type,
  message, traceback, handler, ``da`` dead-lettered at);
- ``n``: live counts (``ready``, ``delayed``, ``inflight``) and per-topic
  ones (``<topic> NUL f|d|x|o``: in flight, delayed, dead, parked); ``stats``:
  counters; ``topics``: every topic; ``policy``: topic -> max attempts;
- ``w:<topic>`` / ``room``: wake-up lists: a token is pushed when a message
  becomes ready on the topic / when room is made, for clients waiting in
  ``BLPOP`` (the wait itself cannot be in a script);
- ``rl:<name>``: a rate limit's token bucket (hash ``tokens``, ``at`` the
  server's time of the last refill in microseconds), kept by ``take_tokens``
  (``ringq.ratelimit``); it expires once it would be full again.
"""

from __future__ import annotations

__all__ = ["SCRIPTS"]

#: Shared by every script: the reaper and the message helpers.
PRELUDE = r"""
local ARGV = ARGV  -- a local: read once per field of every message
local P = ARGV[1]
local NOWS = ARGV[2]
local NOW = tonumber(NOWS)
local NUL = '\0'

-- Times are microseconds since the epoch: exact as Lua numbers (< 2^53),
-- but Lua writes a number with 14 digits; every time goes to Redis as
-- this instead.
local function S(x)
  return string.format('%d', x)
end

-- Counters, wake-ups and topics are gathered while the script runs and
-- written once at its end (``flush``): one command per field, not per message.
-- (The prelude runs on every call and makes a closure per function: what
-- only priorities and ordering keys use is made when they are met, e.g.
-- ``READYP``, so the plain path does not pay for it.)
local DELTA, STATS, WOKEN, TOPICS, READY = {}, {}, {}, {}, {}
local READYP = nil  -- new ids of priorities 1..9, by list key (made on first use)
local ROOM = false
local function cnt(field, by)
  DELTA[field] = (DELTA[field] or 0) + by
end
local function stat(field, by)
  STATS[field] = (STATS[field] or 0) + (by or 1)
end
local function wake(topic)
  WOKEN[topic] = true
end
local function room()
  ROOM = true
end
local function flush()
  for topic, ids in pairs(READY) do  -- new messages join their topic's end, in order
    for i = 1, #ids, 1000 do  -- unpack has a limit
      redis.call('RPUSH', P .. 'r:' .. topic, unpack(ids, i, math.min(i + 999, #ids)))
    end
  end
  if READYP then  -- the same for priorities 1..9 (by list key)
    for r, ids in pairs(READYP) do
      for i = 1, #ids, 1000 do
        redis.call('RPUSH', r, unpack(ids, i, math.min(i + 999, #ids)))
      end
    end
  end
  for f, d in pairs(DELTA) do
    if d ~= 0 then redis.call('HINCRBY', P .. 'n', f, d) end
  end
  for f, d in pairs(STATS) do redis.call('HINCRBY', P .. 'stats', f, d) end
  local topics = {}
  for t in pairs(TOPICS) do topics[#topics + 1] = t end
  if #topics > 0 then redis.call('SADD', P .. 'topics', unpack(topics)) end
  for t in pairs(WOKEN) do
    local w = P .. 'w:' .. t
    redis.call('RPUSH', w, '1')
    redis.call('LTRIM', w, -64, -1)
  end
  if ROOM then
    local w = P .. 'room'
    redis.call('RPUSH', w, '1')
    redis.call('LTRIM', w, -64, -1)
  end
  -- Nothing to reset: a script flushes once, at its end (``WRAP``).
end
local function meta_num(field)
  return tonumber(redis.call('HGET', P .. 'meta', field))
end
local function max_attempts(topic)
  local m = redis.call('HGET', P .. 'policy', topic)
  if m then return tonumber(m) end
  return meta_num('max_attempts')
end
local function live()
  local n = redis.call('HMGET', P .. 'n', 'ready', 'delayed', 'inflight')
  return (tonumber(n[1]) or 0) + (tonumber(n[2]) or 0) + (tonumber(n[3]) or 0)
    + (DELTA['ready'] or 0) + (DELTA['delayed'] or 0) + (DELTA['inflight'] or 0)
end

-- The ready list of priority ``pr`` (a field's value: false, '' or '0' is
-- priority 0, the topic's list ``r:<topic>``). With ``mark``, one of 1..9
-- is marked in ``rp:<topic>`` (a bitmap: bit p) for the checkouts (it is
-- about to be pushed onto).
local function lane(topic, pr, mark)
  if not pr or pr == '' or pr == '0' then return P .. 'r:' .. topic end
  if mark then redis.call('SETBIT', P .. 'rp:' .. topic, pr, 1) end
  return P .. 'r' .. pr .. ':' .. topic
end

-- ``id`` (ordering key ``okey``) leaves its key's line (``o:<topic> NUL
-- <key>``, its live messages' ids in publish order) for good. If it was the
-- head, the next message becomes the head and, if it is ready (parked: not
-- delayed), joins the end of its priority's list.
local function unkey(id, topic, okey)
  local line = P .. 'o:' .. topic .. NUL .. okey
  if redis.call('LINDEX', line, 0) ~= id then
    redis.call('LREM', line, 1, id)
    return
  end
  redis.call('LPOP', line)
  local nxt = redis.call('LINDEX', line, 0)
  if nxt then
    local f = redis.call('HMGET', P .. 'm:' .. nxt, 't', 'due', 'tok', 'pr')
    if f[1] and not f[2] and not f[3] then
      redis.call('RPUSH', lane(topic, f[4], true), nxt .. 'o')
      cnt(topic .. NUL .. 'o', -1)
      wake(topic)
    end
  end
end

-- The id that dedup key ``key`` of ``topic`` answers with while the window
-- opened by its ack is open (``u:<topic> NUL <key>``), or nil; a window
-- found closed (by this call's clock) is deleted.
local function window(topic, key)
  local u = P .. 'u:' .. topic .. NUL .. key
  local v = redis.call('GET', u)
  if not v then return nil end
  local sp = string.find(v, ' ', 1, true)
  if NOW < tonumber(string.sub(v, 1, sp - 1)) then return string.sub(v, sp + 1) end
  redis.call('DEL', u)
  return nil
end

-- The message leaves for good: its dedup key is freed if it holds it, and
-- its ordering key goes to the next message.
local function forget(id, m)
  local f = redis.call('HMGET', m, 'k', 'o', 't')
  if f[1] then
    local dk = f[3] .. NUL .. f[1]
    if redis.call('HGET', P .. 'dedup', dk) == id then
      redis.call('HDEL', P .. 'dedup', dk)
    end
  end
  if f[2] then unkey(id, f[3], f[2]) end
  redis.call('DEL', m)
end

-- A superseded message out of flight is dropped: its successor carries
-- its key and its payload.
local function drop(id, m)
  forget(id, m)
  stat('superseded_dropped')
  room()
end

-- A message in flight (or just out of it) goes to the dead letters.
local function dead_letter(id, m, topic, reason, et, em, tb, hd, at)
  local f = redis.call('HGETALL', m)
  local x = P .. 'x:' .. id
  redis.call('DEL', x)
  redis.call('HSET', x, unpack(f))
  redis.call('HSET', x, 'reason', reason, 'da', at)
  if not redis.call('HGET', m, 'ff') then redis.call('HSET', x, 'ff', at) end
  redis.call('HDEL', x, 'et', 'em', 'tb', 'hd', 's', 'tok', 'dl', 'due', 'sup')
  if et and et ~= '' then redis.call('HSET', x, 'et', et) end
  if em and em ~= '' then redis.call('HSET', x, 'em', em) end
  if tb and tb ~= '' then redis.call('HSET', x, 'tb', tb) end
  if hd and hd ~= '' then redis.call('HSET', x, 'hd', hd) end
  forget(id, m)
  redis.call('RPUSH', P .. 'dlq', id)
  cnt(topic .. NUL .. 'x', 1)
  stat('dead_lettered')
  local cap = meta_num('dlq_capacity')
  while redis.call('LLEN', P .. 'dlq') > cap do
    local old = redis.call('LPOP', P .. 'dlq')
    local ot = redis.call('HGET', P .. 'x:' .. old, 't')
    if ot then cnt(ot .. NUL .. 'x', -1) end
    redis.call('DEL', P .. 'x:' .. old)
    stat('dlq_evicted')
  end
  room()
end

-- Takes a message out of flight (its lease ends); ``counted``: the
-- delivery counts as an attempt (all but a release).
local function unlease(id, m, topic, counted)
  redis.call('ZREM', P .. 'leases', id)
  redis.call('HDEL', m, 'tok', 'dl')
  if counted then redis.call('HINCRBY', m, 'a', 1) end
  cnt('inflight', -1)
  cnt(topic .. NUL .. 'f', -1)
end

-- The message becomes ready (``pr``, ``okey``: its priority and ordering
-- key fields, false when absent): onto the end (``front``: the front) of
-- its priority's list, unless it has an ordering key whose head is another
-- message: then it is parked (counted ready, listed by ``unkey``). A
-- message with an ordering key is listed as ``<id>o``: a checkout reads
-- the key of those only.
local function to_ready(id, topic, front, pr, okey)
  cnt('ready', 1)
  local entry = id
  if okey then
    if redis.call('LINDEX', P .. 'o:' .. topic .. NUL .. okey, 0) ~= id then
      cnt(topic .. NUL .. 'o', 1)
      return
    end
    entry = id .. 'o'
  end
  if front then
    redis.call('LPUSH', lane(topic, pr, true), entry)
  else
    redis.call('RPUSH', lane(topic, pr, true), entry)
  end
  wake(topic)
end

-- A delay that fell due: the message joins the end of its topic.
local function release_due(id)
  redis.call('ZREM', P .. 'delayed', id)
  local m = P .. 'm:' .. id
  local f = redis.call('HMGET', m, 't', 'pr', 'o')
  local topic = f[1]
  if topic then
    redis.call('HDEL', m, 'due')
    cnt('delayed', -1)
    cnt(topic .. NUL .. 'd', -1)
    to_ready(id, topic, false, f[2], f[3])
  end
end

-- A lease that ran out: the message is ready again, dead-lettered on its
-- last attempt, dropped if superseded.
local function end_lease(id, deadline)
  local m = P .. 'm:' .. id
  local f = redis.call('HMGET', m, 't', 'pr', 'o', 'sup')
  local topic = f[1]
  if not topic then
    redis.call('ZREM', P .. 'leases', id)
    return
  end
  unlease(id, m, topic, true)
  stat('expired')
  local attempt = tonumber(redis.call('HGET', m, 'a'))
  local most = max_attempts(topic)
  if f[4] then
    drop(id, m)
  elseif attempt >= most then
    local handler = redis.call('HGET', P .. 'policy', topic .. NUL .. 'h') or ''
    dead_letter(id, m, topic, 'lease_expired', 'LeaseExpired',
      'lease expired on delivery ' .. attempt .. ' of ' .. most
        .. ' (the handler did not finish in time)',
      '', handler, deadline)
  else
    if not redis.call('HGET', m, 'ff') then redis.call('HSET', m, 'ff', deadline) end
    to_ready(id, topic, false, f[2], f[3])
  end
end

-- Delays that fell due and leases that ran out, in the order of their
-- times (a lease first at a tie), as the engine takes them: a lease that
-- ended before a delay fell due re-enters ahead of it. At most 1000 of
-- each per call, oldest first; a list cut at 1000 bounds what is settled
-- now (nothing past its last time), so the next call goes on in order.
-- Every script runs this first.
local function reap()
  local due = redis.call(
    'ZRANGEBYSCORE', P .. 'delayed', '-inf', NOWS, 'LIMIT', 0, 1000, 'WITHSCORES')
  local expired = redis.call(
    'ZRANGEBYSCORE', P .. 'leases', '-inf', NOWS, 'LIMIT', 0, 1000, 'WITHSCORES')
  local horizon = math.huge
  if #due == 2000 then horizon = tonumber(due[#due]) end
  if #expired == 2000 then horizon = math.min(horizon, tonumber(expired[#expired])) end
  local i, j = 1, 1
  while i <= #due or j <= #expired do
    local lease_first = i > #due
      or (j <= #expired and tonumber(expired[j + 1]) <= tonumber(due[i + 1]))
    if lease_first then
      if tonumber(expired[j + 1]) > horizon then break end
      end_lease(expired[j], expired[j + 1])
      j = j + 2
    else
      if tonumber(due[i + 1]) > horizon then break end
      release_due(due[i])
      i = i + 2
    end
  end
end

-- The lease (id, token) is current: the message is in flight under it.
local function current(id, tok)
  local m = P .. 'm:' .. id
  return redis.call('HGET', m, 'tok') == tok
end

-- The earliest time something falls due (a delay, a lease), or -1.
local function next_due()
  local a = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')
  local b = redis.call('ZRANGE', P .. 'leases', 0, 0, 'WITHSCORES')
  local t = -1
  if #a > 0 then t = tonumber(a[2]) end
  if #b > 0 and string.sub(b[1], 1, 1) ~= '~' and (t < 0 or tonumber(b[2]) < t) then
    t = tonumber(b[2])
  end
  return t
end

-- Adds leases (score, id, ...) to ``leases``. A sorted set of at most 128
-- members is a listpack, where adding 100 costs 100 scans of it (4x a
-- skip list's cost); 129 members that never fall due (``~pad<n>``, score
-- +inf) keep it a skip list for good.
local PAD = 129
local function add_leases(zadd)
  local L = P .. 'leases'
  if redis.call('ZCARD', L) < PAD then
    local pad = {}
    for k = 1, PAD do pad[#pad + 1] = '+inf'; pad[#pad + 1] = '~pad' .. k end
    redis.call('ZADD', L, unpack(pad))
  end
  for i = 1, #zadd, 2000 do  -- unpack has a limit: at most 1000 pairs a call
    redis.call('ZADD', L, unpack(zadd, i, math.min(i + 1999, #zadd)))
  end
end

-- A new ready message with no options, with id ``seq`` (the caller made
-- sure there is room): three fields.
local function insert_plain(topic, payload, seq)
  local id = string.format('%016x', seq)
  redis.call('HSET', P .. 'm:' .. id, 't', topic, 'p', payload, 'e', NOWS)
  local ready = READY[topic]
  if not ready then ready = {}; READY[topic] = ready end
  ready[#ready + 1] = id
  TOPICS[topic] = true
  cnt('ready', 1)
  wake(topic)
  stat('published')
  return id
end

-- A new message (the caller made sure there is room). Fields from ARGV at
-- i (``ITEM``, 10 of them): topic, payload, key, delay (us, 0: none),
-- headers, corr, caus, priority ('': 0), ordering key, dedup window (us,
-- '': none); version.
local function insert(i, version, seq)
  local topic, key, delay = ARGV[i], ARGV[i + 2], tonumber(ARGV[i + 3])
  local pr, okey = ARGV[i + 7], ARGV[i + 8]
  seq = seq or redis.call('INCR', P .. 'seq')
  if version == 1 and key == '' and delay == 0 and ARGV[i + 4] == '' and ARGV[i + 5] == ''
      and ARGV[i + 6] == '' and pr == '' and okey == '' then
    return insert_plain(topic, ARGV[i + 1], seq)
  end
  local id = string.format('%016x', seq)
  local m = P .. 'm:' .. id
  TOPICS[topic] = true
  stat('published')
  local f = {'t', topic, 'p', ARGV[i + 1], 'e', NOWS}
  if version ~= 1 then f[#f + 1], f[#f + 2] = 'v', version end
  if key ~= '' then
    f[#f + 1], f[#f + 2] = 'k', key
    if ARGV[i + 9] ~= '' then f[#f + 1], f[#f + 2] = 'dw', ARGV[i + 9] end
    redis.call('HSET', P .. 'dedup', topic .. NUL .. key, id)
  end
  if ARGV[i + 4] ~= '' then f[#f + 1], f[#f + 2] = 'h', ARGV[i + 4] end
  if ARGV[i + 5] ~= '' then f[#f + 1], f[#f + 2] = 'c', ARGV[i + 5] end
  if ARGV[i + 6] ~= '' then f[#f + 1], f[#f + 2] = 'z', ARGV[i + 6] end
  if pr ~= '' then f[#f + 1], f[#f + 2] = 'pr', pr end
  -- Behind the head of its ordering key, it waits for its turn.
  local parked = false
  if okey ~= '' then
    f[#f + 1], f[#f + 2] = 'o', okey
    parked = redis.call('RPUSH', P .. 'o:' .. topic .. NUL .. okey, id) > 1
  end
  if delay > 0 then
    local due = S(NOW + delay)
    f[#f + 1], f[#f + 2] = 'due', due
    redis.call('HSET', m, unpack(f))
    redis.call('ZADD', P .. 'delayed', due, id)
    cnt('delayed', 1)
    cnt(topic .. NUL .. 'd', 1)
  else
    redis.call('HSET', m, unpack(f))
    cnt('ready', 1)
    if parked then
      cnt(topic .. NUL .. 'o', 1)
    else
      local ready
      if pr == '' then
        ready = READY[topic]
        if not ready then ready = {}; READY[topic] = ready end
      else
        READYP = READYP or {}
        local r = lane(topic, pr, false)
        ready = READYP[r]
        if not ready then  -- the first of this script on its list: marked once
          ready = {}
          READYP[r] = ready
          lane(topic, pr, true)
        end
      end
      if okey ~= '' then ready[#ready + 1] = id .. 'o' else ready[#ready + 1] = id end
      wake(topic)
    end
  end
  return id
end

-- What publishing the item at ARGV[i] does to its key's holder:
-- 'new' (with the version to give it, and the in-flight holder to
-- supersede, if any), 'replace' or 'keep' (with the holder), or 'window'
-- (with the id of the acked message whose dedup window is open).
local function plan(i, keep)
  local topic, key = ARGV[i], ARGV[i + 2]
  if key == '' then return 'new', 1, nil end
  local holder = redis.call('HGET', P .. 'dedup', topic .. NUL .. key)
  if not holder then
    local acked = window(topic, key)
    if acked then return 'window', acked, nil end
    return 'new', 1, nil
  end
  local m = P .. 'm:' .. holder
  if keep then return 'keep', holder, nil end
  if redis.call('HEXISTS', m, 'tok') == 1 then
    return 'new', (tonumber(redis.call('HGET', m, 'v')) or 1) + 1, holder
  end
  return 'replace', holder, nil
end

-- A replace keeps the holder's place: its priority and ordering key stay;
-- payload, headers, ids and dedup window are the new publish's.
local function replace(i, holder)
  local m = P .. 'm:' .. holder
  redis.call('HSET', m, 'p', ARGV[i + 1])
  redis.call('HSET', m, 'v', (tonumber(redis.call('HGET', m, 'v')) or 1) + 1)
  redis.call('HDEL', m, 'h', 'c', 'z', 'dw')
  if ARGV[i + 4] ~= '' then redis.call('HSET', m, 'h', ARGV[i + 4]) end
  if ARGV[i + 5] ~= '' then redis.call('HSET', m, 'c', ARGV[i + 5]) end
  if ARGV[i + 6] ~= '' then redis.call('HSET', m, 'z', ARGV[i + 6]) end
  if ARGV[i + 9] ~= '' then redis.call('HSET', m, 'dw', ARGV[i + 9]) end
  stat('replaced')
end

local function supersede(holder)
  if holder then
    redis.call('HSET', P .. 'm:' .. holder, 'sup', '1')
    stat('superseded')
  end
end

local function full(need)
  return {err = 'FULL ' .. need .. ' ' .. meta_num('capacity')}
end
"""

#: publish(P, now, topic, payload, key, delay, headers, corr, caus,
#: priority, ordering key, dedup window, on_duplicate, expected_version or '') -> id
PUBLISH = r"""
reap()
local keep = ARGV[13] == 'keep'
local expected = ARGV[14]
local what, a, b = plan(3, keep)
if what == 'window' then  -- acked within its dedup window: answered, not enqueued
  stat('kept')
  return a
end
if expected ~= '' then
  local holder = b
  if what ~= 'new' then holder = a end
  local actual = 0
  if holder then actual = tonumber(redis.call('HGET', P .. 'm:' .. holder, 'v')) or 1 end
  if tonumber(expected) ~= actual then
    return {err = 'VERSION ' .. expected .. ' ' .. actual}
  end
end
if what == 'keep' then
  stat('kept')
  return a
elseif what == 'replace' then
  replace(3, a)
  return a
end
if live() + 1 > meta_num('capacity') then return full(1) end
supersede(b)
return insert(3, a)
"""

#: publish_many(P, now, count, then ITEM fields per item) -> ids (all or none)
PUBLISH_MANY = r"""
reap()
local ITEM = 10
local count = tonumber(ARGV[3])
local need, plans, seen = 0, {}, {}
local NEW = {'new', 1, nil}
for j = 0, count - 1 do
  local i = 4 + j * ITEM
  local dk = ARGV[i + 2] ~= '' and (ARGV[i] .. NUL .. ARGV[i + 2]) or nil
  if not dk then  -- no key: a new message
    plans[j] = NEW
    need = need + 1
  elseif seen[dk] then
    plans[j] = {'again', seen[dk]}
  else
    local what, a, b = plan(i, false)
    plans[j] = {what, a, b}
    if what == 'new' then need = need + 1 end
    if what ~= 'window' then seen[dk] = j end
  end
end
if live() + need > meta_num('capacity') then return full(need) end
local ids = {}
local seq = redis.call('INCRBY', P .. 'seq', need) - need  -- the batch's ids, taken at once
for j = 0, count - 1 do
  local i = 4 + j * ITEM
  local p = plans[j]
  if p[1] == 'window' then
    stat('kept')
    ids[j + 1] = p[2]
  elseif p[1] == 'again' then
    replace(i, ids[p[2] + 1])
    ids[j + 1] = ids[p[2] + 1]
  elseif p[1] == 'replace' then
    replace(i, p[2])
    ids[j + 1] = p[2]
  else
    supersede(p[3])
    seq = seq + 1
    ids[j + 1] = insert(i, p[2], seq)
  end
end
return ids
"""

#: publish_plain(P, now, topic, payload...) -> the number before the first
#: id (the ids follow it): publish_many of payloads with no options, on one
#: topic (all or none); one argument per message instead of seven
PUBLISH_PLAIN = r"""
reap()
local topic, count = ARGV[3], #ARGV - 3
if live() + count > meta_num('capacity') then return full(count) end
local seq = redis.call('INCRBY', P .. 'seq', count) - count
for j = 1, count do insert_plain(topic, ARGV[3 + j], seq + j) end
return seq
"""

#: checkout(P, now, topic, max, lease_us, share) -> {next_due, lease deadline,
#: then 7 values per delivery: id, payload, attempt, version, enqueued at,
#: lease token, and false or {dedup key, headers, correlation, causation,
#: priority, ordering key}}
CHECKOUT = r"""
reap()
-- 2^52: added to the lease token of a message with an ordering key
local KEYED = 4503599627370496
local topic, most, lease, share = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local r = P .. 'r:' .. topic
local dl = S(NOW + lease)
local out = {next_due(), dl}
-- The priorities 9..1 whose lists may hold ids (``rp:<topic>``, bit p);
-- none on the plain path, where this read replaces the list's LLEN.
local rp = P .. 'rp:' .. topic
local bits = redis.call('GET', rp)
local ids, prs
if not bits then
  local n = most
  if share > 1 then n = math.min(most, math.ceil(redis.call('LLEN', r) / share)) end
  if n <= 0 then return out end
  ids = redis.call('LPOP', r, n)
  if not ids then return out end
else
  -- Highest priority first (a mark whose list is empty is cleared; the
  -- bitmap is deleted once none is left), then 0.
  local lanes, ready, left = {}, redis.call('LLEN', r), 0
  local b0, b1 = string.byte(bits, 1) or 0, string.byte(bits, 2) or 0
  for pr = 9, 1, -1 do
    local byte = b0
    if pr >= 8 then byte = b1 end
    if math.floor(byte / 2 ^ (7 - pr % 8)) % 2 == 1 then
      local lk = P .. 'r' .. pr .. ':' .. topic
      local len = redis.call('LLEN', lk)
      if len > 0 then
        lanes[#lanes + 1] = {lk, tostring(pr)}
        ready = ready + len
        left = left + 1
      else
        redis.call('SETBIT', rp, pr, 0)
      end
    end
  end
  if left == 0 then redis.call('DEL', rp) end
  local n = math.min(most, math.ceil(ready / share))
  if n <= 0 then return out end
  ids, prs = {}, {}
  for _, l in ipairs(lanes) do
    local want = n - #ids
    local got = redis.call('LPOP', l[1], want)
    for _, id in ipairs(got) do
      ids[#ids + 1] = id
      prs[#ids] = l[2]  -- its priority is its list's
    end
    if #ids >= n then break end
  end
  if #ids < n then
    local got = redis.call('LPOP', r, n - #ids)
    if got then
      for _, id in ipairs(got) do ids[#ids + 1] = id end
    end
  end
end
local first = redis.call('INCRBY', P .. 'tok', #ids) - #ids
local zadd = {}
local taken = 0
for k, id in ipairs(ids) do
  local keyed = #id > 16  -- '<id>o': it has an ordering key
  if keyed then id = string.sub(id, 1, 16) end
  local m = P .. 'm:' .. id
  local f
  if keyed then
    f = redis.call('HMGET', m, 'p', 'v', 'k', 'h', 'c', 'z', 'e', 'a', 'o')
  else
    f = redis.call('HMGET', m, 'p', 'v', 'k', 'h', 'c', 'z', 'e', 'a')
  end
  -- An id whose message is gone (only a server that lost part of a script
  -- leaves one, see docs/backends.md) is dropped, not handed out empty.
  if f[1] then
    taken = taken + 1
    local tok
    if keyed then tok = S(first + k + KEYED) else tok = tostring(first + k) end
    local a = (tonumber(f[8]) or 0) + 1
    redis.call('HSET', m, 'tok', tok)
    zadd[#zadd + 1] = dl
    zadd[#zadd + 1] = id
    local pr = prs and prs[k] or false
    local extra = false
    if f[3] or f[4] or f[5] or f[6] or pr or f[9] then
      extra = {f[3] or false, f[4] or false, f[5] or false, f[6] or false, pr, f[9] or false}
    end
    local o = #out
    out[o + 1], out[o + 2], out[o + 3], out[o + 4] = id, f[1], a, f[2] or 1
    out[o + 5], out[o + 6], out[o + 7] = f[7], tok, extra
  end
end
add_leases(zadd)
cnt('ready', -#ids)
cnt('inflight', taken)
cnt(topic .. NUL .. 'f', taken)
stat('delivered', taken)
if #out > 2 then out[1] = next_due() end
return out
"""

#: ack(P, now, n_leases, id, tok..., n_items, ITEM fields per item) -> lost ids
#: (with follow-ups: all or nothing)
ACK = r"""
reap()
local ITEM = 10
local KEYED = 4503599627370496  -- a lease token from 2^52 on: the message has an ordering key
-- A dedup window's key outlives the window by this much real time (ms): it
-- is judged by the clients' clock (its ``until``); Redis' expiry only
-- collects it afterwards.
local WINDOW_SLACK_MS = 60000
local n = tonumber(ARGV[3])
local lost, valid, seen = {}, {}, {}
-- Topic NUL key of each superseded message acked: a follow-up repeating it
-- is dropped (a newer message took the key meanwhile; it stands).
local taken = {}
for j = 0, n - 1 do
  local id, tok = ARGV[4 + 2 * j], ARGV[5 + 2 * j]
  local f = redis.call('HMGET', P .. 'm:' .. id, 'tok', 't', 'k', 'sup')
  -- A delivery listed twice: the first acks it, the second finds it gone
  -- (as in the engine).
  if f[1] == tok and not seen[id] then
    seen[id] = true
    if f[4] and f[3] then taken[f[2] .. NUL .. f[3]] = true end
    local okey = false
    if #tok >= 16 and tonumber(tok) >= KEYED then
      okey = redis.call('HGET', P .. 'm:' .. id, 'o')
    end
    valid[#valid + 1] = {id, f[2], f[3], okey}
  else
    lost[#lost + 1] = id
  end
end
local base = 4 + 2 * n
local count = tonumber(ARGV[base])
if count > 0 and #lost > 0 then return lost end
if count > 0 then
  -- Room is checked before anything changes (a script's writes are not
  -- undone by an error): the acks free theirs first.
  local acked, need, keyed = {}, 0, {}
  for _, v in ipairs(valid) do acked[v[1]] = true end
  for j = 0, count - 1 do
    local i = base + 1 + j * ITEM
    local key = ARGV[i + 2]
    if key == '' then
      need = need + 1
    elseif not keyed[ARGV[i] .. NUL .. key] and not taken[ARGV[i] .. NUL .. key] then
      -- A key's later follow-ups replace (or keep) its first: no more room.
      keyed[ARGV[i] .. NUL .. key] = true
      local holder = redis.call('HGET', P .. 'dedup', ARGV[i] .. NUL .. key)
      if not holder or acked[holder] then
        if not window(ARGV[i], key) then need = need + 1 end
      elseif redis.call('HEXISTS', P .. 'm:' .. holder, 'tok') == 1 then
        need = need + 1
      end
    end
  end
  if live() - #valid + need > meta_num('capacity') then return full(need) end
end
local gone, ids, windows = {}, {}, nil
for _, v in ipairs(valid) do
  local id, topic, key = v[1], v[2], v[3]
  ids[#ids + 1] = id
  gone[#gone + 1] = P .. 'm:' .. id
  if key then
    local dk = topic .. NUL .. key
    if redis.call('HGET', P .. 'dedup', dk) == id then redis.call('HDEL', P .. 'dedup', dk) end
    v[5] = redis.call('HGET', P .. 'm:' .. id, 'dw')  -- its dedup window
    if v[5] then
      windows = windows or {}
      windows[#windows + 1] = v
    end
  end
  if v[4] then unkey(id, topic, v[4]) end
  cnt(topic .. NUL .. 'f', -1)
end
for i = 1, #ids, 1000 do  -- unpack has a limit
  local last = math.min(i + 999, #ids)
  redis.call('ZREM', P .. 'leases', unpack(ids, i, last))
  redis.call('DEL', unpack(gone, i, last))
end
if #valid > 0 then
  cnt('inflight', -#valid)
  stat('acked', #valid)
  room()
end
for j = 0, count - 1 do
  local i = base + 1 + j * ITEM
  local what, a, b
  if ARGV[i + 2] ~= '' and taken[ARGV[i] .. NUL .. ARGV[i + 2]] then
    what = 'taken'
  else
    what, a, b = plan(i, false)
  end
  if what == 'taken' then
    -- dropped: see ``taken`` above
  elseif what == 'replace' then
    replace(i, a)
  elseif what == 'window' then
    stat('kept')
  else
    supersede(b)
    insert(i, a)
  end
end
-- The acked messages' dedup windows open (after the follow-ups were
-- planned: as in the engine, they do not see them).
for _, v in ipairs(windows or {}) do
  local until_ = NOW + tonumber(v[5])
  redis.call('SET', P .. 'u:' .. v[2] .. NUL .. v[3], S(until_) .. ' ' .. v[1],
    'PX', S(math.ceil(tonumber(v[5]) / 1000) + WINDOW_SLACK_MS))
end
return lost
"""

#: release(P, now, id, tok, ...) -> lost ids; each valid one goes to the
#: front of its topic, in the order given, its delivery not counted.
RELEASE = r"""
reap()
local lost, valid, seen = {}, {}, {}
for j = 3, #ARGV, 2 do
  local id, tok = ARGV[j], ARGV[j + 1]
  -- Listed twice: released once, the second is lost (as in the engine).
  if current(id, tok) and not seen[id] then
    seen[id] = true
    valid[#valid + 1] = id
  else
    lost[#lost + 1] = id
  end
end
for k = #valid, 1, -1 do
  local id = valid[k]
  local m = P .. 'm:' .. id
  local f = redis.call('HMGET', m, 't', 'pr', 'o', 'sup')
  local topic = f[1]
  unlease(id, m, topic, false)
  stat('released')
  if f[4] then
    drop(id, m)
  else
    to_ready(id, topic, true, f[2], f[3])
  end
end
return lost
"""

#: nack(P, now, id, tok, delay_us (-1: none), error type, message,
#: traceback, handler, dead-letter reason) -> 'ok' | 'lost'
NACK = r"""
reap()
local id, tok = ARGV[3], ARGV[4]
if not current(id, tok) then return 'lost' end
local delay = tonumber(ARGV[5])
local m = P .. 'm:' .. id
local f = redis.call('HMGET', m, 't', 'pr', 'o', 'sup')
local topic = f[1]
unlease(id, m, topic, true)
stat('nacked')
if f[4] then
  drop(id, m)
  return 'ok'
end
local attempt = tonumber(redis.call('HGET', m, 'a'))
local reason = ARGV[10]
if reason == '' and attempt >= max_attempts(topic) then reason = 'max_attempts' end
if reason ~= '' then
  dead_letter(id, m, topic, reason, ARGV[6], ARGV[7], ARGV[8], ARGV[9], NOWS)
  return 'ok'
end
if not redis.call('HGET', m, 'ff') then redis.call('HSET', m, 'ff', NOWS) end
if delay > 0 then
  redis.call('HSET', m, 'due', S(NOW + delay))
  redis.call('ZADD', P .. 'delayed', S(NOW + delay), id)
  cnt('delayed', 1)
  cnt(topic .. NUL .. 'd', 1)
else
  to_ready(id, topic, false, f[2], f[3])
end
return 'ok'
"""

#: extend(P, now, id, tok, by_us) -> new deadline | 'lost'
EXTEND = r"""
reap()
local id, tok = ARGV[3], ARGV[4]
if not current(id, tok) then return 'lost' end
local dl = S(NOW + tonumber(ARGV[5]))
add_leases({dl, id})
return dl
"""

#: cancel(P, now, id) -> 0: no such live message, 1: it was ready or
#: delayed, 2: it was in flight (the lease ends with it: its holder's calls
#: are LeaseLost); the message is gone, its dedup key freed
CANCEL = r"""
reap()
local id = ARGV[3]
local m = P .. 'm:' .. id
local f = redis.call('HMGET', m, 't', 'pr', 'o')
local topic = f[1]
if not topic then return 0 end
local was = 1
if redis.call('HEXISTS', m, 'tok') == 1 then
  unlease(id, m, topic, false)
  was = 2
elseif redis.call('ZREM', P .. 'delayed', id) == 1 then
  cnt('delayed', -1)
  cnt(topic .. NUL .. 'd', -1)
elseif f[3] and redis.call('LINDEX', P .. 'o:' .. topic .. NUL .. f[3], 0) ~= id then
  cnt(topic .. NUL .. 'o', -1)  -- parked behind its ordering key: on no list
  cnt('ready', -1)
else
  redis.call('LREM', lane(topic, f[2], false), 1, f[3] and id .. 'o' or id)
  cnt('ready', -1)
end
forget(id, m)
stat('cancelled')
room()
return was
"""

#: reap(P, now) -> next due (the manual clock's advance, and waiters)
REAP = r"""
reap()
return next_due()
"""

#: dlq_replay(P, now, all ('1'/'0'), ids...) -> count
DLQ_REPLAY = r"""
reap()
-- As the engine's: dead letters oldest first (those named, or all); one
-- whose dedup key is live again (or taken by an earlier one of this
-- replay) stays, and so do those past the room left. Version kept.
local named = nil
if ARGV[3] ~= '1' then
  named = {}
  for j = 4, #ARGV do named[ARGV[j]] = true end
end
local room = meta_num('capacity') - live()
local todo, keys = {}, {}
for _, id in ipairs(redis.call('LRANGE', P .. 'dlq', 0, -1)) do
  if #todo >= room then break end
  local x = P .. 'x:' .. id
  if (named == nil or named[id]) and redis.call('EXISTS', x) == 1 then
    local f = redis.call('HMGET', x, 't', 'k')
    local key = f[2] or ''
    local dk = f[1] .. NUL .. key
    if key == '' or (not keys[dk] and not redis.call('HGET', P .. 'dedup', dk)) then
      if key ~= '' then keys[dk] = true end
      todo[#todo + 1] = id
    end
  end
end
for _, id in ipairs(todo) do
  local x = P .. 'x:' .. id
  local f = redis.call('HMGET', x, 't', 'p', 'k', 'h', 'c', 'z', 'pr', 'o', 'dw', 'v')
  local key = f[3] or ''
  local n = redis.call('INCR', P .. 'seq')
  local nid = string.format('%016x', n)
  local m = P .. 'm:' .. nid
  redis.call('HSET', m, 't', f[1], 'p', f[2], 'e', NOWS)
  if key ~= '' then
    redis.call('HSET', m, 'k', key)
    redis.call('HSET', P .. 'dedup', f[1] .. NUL .. key, nid)
    if f[9] then redis.call('HSET', m, 'dw', f[9]) end
  end
  if f[4] then redis.call('HSET', m, 'h', f[4]) end
  if f[5] then redis.call('HSET', m, 'c', f[5]) end
  if f[6] then redis.call('HSET', m, 'z', f[6]) end
  if f[7] then redis.call('HSET', m, 'pr', f[7]) end
  if f[10] then redis.call('HSET', m, 'v', f[10]) end
  if f[8] then  -- last of its ordering key's line
    redis.call('HSET', m, 'o', f[8])
    redis.call('RPUSH', P .. 'o:' .. f[1] .. NUL .. f[8], nid)
  end
  to_ready(nid, f[1], false, f[7], f[8])
  redis.call('DEL', x)
  redis.call('LREM', P .. 'dlq', 1, id)
  cnt(f[1] .. NUL .. 'x', -1)
  stat('dlq_replayed')
end
return #todo
"""

#: dlq_purge(P, now, all ('1'/'0'), ids...) -> count
DLQ_PURGE = r"""
local ids = {}
if ARGV[3] == '1' then
  ids = redis.call('LRANGE', P .. 'dlq', 0, -1)
else
  for j = 4, #ARGV do ids[#ids + 1] = ARGV[j] end
end
local done = 0
for _, id in ipairs(ids) do
  local x = P .. 'x:' .. id
  local topic = redis.call('HGET', x, 't')
  if topic then
    redis.call('DEL', x)
    redis.call('LREM', P .. 'dlq', 1, id)
    cnt(topic .. NUL .. 'x', -1)
    stat('dlq_purged')
    done = done + 1
  end
end
return done
"""

#: Runs an operation's body, then writes what it gathered (``flush``).
WRAP = "local function body()\n{}\nend\nlocal r = body()\nflush()\nreturn r\n"

SCRIPTS: dict[str, str] = {
    name: PRELUDE + WRAP.format(body)
    for name, body in {
        "publish": PUBLISH,
        "publish_many": PUBLISH_MANY,
        "publish_plain": PUBLISH_PLAIN,
        "checkout": CHECKOUT,
        "ack": ACK,
        "release": RELEASE,
        "nack": NACK,
        "extend": EXTEND,
        "cancel": CANCEL,
        "reap": REAP,
        "dlq_replay": DLQ_REPLAY,
        "dlq_purge": DLQ_PURGE,
    }.items()
}
"""Script name -> source (the prelude and the operation)."""

#: A token bucket (``RedisBackend.take_tokens``, ``ringq.ratelimit.take``):
#: ARGV[3..6] name, rate (tokens a second), burst, n (< 0 gives -n back).
#: On the server's clock (``TIME``), one for every client, whatever theirs
#: say. Returns {granted, microseconds until a token is due if none was}.
#: It needs none of the prelude.
TAKE_TOKENS = r"""
local key = ARGV[1] .. 'rl:' .. ARGV[3]
local rate, burst, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', key, 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil or tokens < 0 then
  tokens, at = burst, now
end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000000)
end
local granted, wait = 0, 0
if n < 0 then
  tokens = math.min(burst, tokens - n)
else
  granted = math.max(0, math.min(n, math.floor(tokens + 1e-9)))
  tokens = tokens - granted
  if granted == 0 and n > 0 then
    wait = math.max(1, math.ceil((1 - tokens) * 1000000 / rate))
  end
end
redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'at', string.format('%d', now))
redis.call('PEXPIRE', key, string.format('%d', math.ceil((burst - tokens) * 1000 / rate) + 1000))
return {granted, wait}
"""
SCRIPTS["take_tokens"] = TAKE_TOKENS
