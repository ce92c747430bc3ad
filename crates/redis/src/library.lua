#!lua name=shardkeeper_1
-- shardkeeper's cluster-mode steps, each one atomic inside Redis. Loaded with
-- FUNCTION LOAD REPLACE by every node at start; the library name and every function
-- name carry the protocol version (1), so nodes of another version cannot replace them.
--
-- Owner values are "<node>:<epoch>". Every write for a shard compares the owner key
-- with the writer's own value first and is refused otherwise (fencing).

-- Milliseconds on Redis's own clock, clamped so it never runs backwards.
local function now_ms(clock)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last = tonumber(redis.call('GET', clock) or '0')
  if now < last then
    return last
  end
  redis.call('SET', clock, string.format('%d', now))
  return now
end

-- Whole milliseconds as a string (no exponent, whatever the Lua number formatting).
local function ms(n)
  return string.format('%d', n)
end

-- KEYS: meta, alive, nodes, seen, clock
-- ARGV: node, instance, lease_ms, info, total, protocol, max_concurrency, window
-- (window = "<window_ms>+<margin_ms>": every node must space grants alike)
-- Returns 1 when the namespace was empty (first node, or Redis lost its data), else 0.
local function join(keys, args)
  local meta, alive, nodes, seen, clock = keys[1], keys[2], keys[3], keys[4], keys[5]
  local node, instance, lease, info = args[1], args[2], args[3], args[4]
  local total, protocol, concurrency, window = args[5], args[6], args[7], args[8]
  local stored = redis.call('HMGET', meta, 'protocol', 'total', 'max_concurrency', 'window')
  if stored[4] and stored[4] ~= window then
    return redis.error_reply('WINDOW ' .. stored[4])
  end
  if stored[1] and stored[1] ~= protocol then
    return redis.error_reply('PROTOCOL ' .. stored[1])
  end
  if stored[2] and stored[2] ~= total then
    return redis.error_reply('TOTAL ' .. stored[2])
  end
  if stored[3] and stored[3] ~= concurrency then
    return redis.error_reply('CONCURRENCY ' .. stored[3])
  end
  local holder = redis.call('GET', alive)
  if holder and holder ~= instance then
    return redis.error_reply('DUPLICATE ' .. node)
  end
  redis.call('HSET', meta, 'protocol', protocol, 'total', total, 'max_concurrency', concurrency,
    'window', window)
  redis.call('SET', alive, instance, 'PX', lease)
  redis.call('HSET', nodes, node, info)
  redis.call('HSET', seen, node, ms(now_ms(clock)))
  if stored[1] then
    return 0
  end
  return 1
end

-- KEYS: alive, nodes, seen
-- ARGV: node, instance
local function leave(keys, args)
  if redis.call('GET', keys[1]) == args[2] then
    redis.call('DEL', keys[1])
    redis.call('HDEL', keys[2], args[1])
    redis.call('HDEL', keys[3], args[1])
  end
  return 1
end

-- The node's heartbeat and the renewal of every lease it holds, in one step.
-- KEYS: alive, epochs, seen, clock, then one owner key per shard
-- ARGV: node, instance, lease_ms, then shard and epoch per owner key
-- Returns one flag per shard: 1 still owned (renewed or re-asserted), 0 lost.
local function beat(keys, args)
  local alive, epochs, seen, clock = keys[1], keys[2], keys[3], keys[4]
  local node, instance, lease = args[1], args[2], args[3]
  local holder = redis.call('GET', alive)
  if holder and holder ~= instance then
    return redis.error_reply('DUPLICATE ' .. node)
  end
  redis.call('SET', alive, instance, 'PX', lease)
  redis.call('HSET', seen, node, ms(now_ms(clock)))
  local kept = {}
  for i = 5, #keys do
    local shard, epoch = args[2 * i - 6], args[2 * i - 5]
    local mine = node .. ':' .. epoch
    local owner = redis.call('GET', keys[i])
    if owner == mine then
      redis.call('PEXPIRE', keys[i], lease)
      kept[#kept + 1] = 1
    elseif not owner and tonumber(redis.call('HGET', epochs, shard) or '0') <= tonumber(epoch) then
      -- Gone, and nobody claimed it since: Redis restarted (or lost its data) under a
      -- live owner. The owner asserts it again with the same epoch.
      redis.call('SET', keys[i], mine, 'PX', lease)
      redis.call('HSET', epochs, shard, epoch)
      kept[#kept + 1] = 1
    else
      kept[#kept + 1] = 0
    end
  end
  return kept
end

-- KEYS: owner, epochs, alive
-- ARGV: shard, node, lease_ms, instance
-- Returns the owner value after the step: "<node>:<epoch>" of the claim when it
-- succeeded (or had already succeeded: a retried claim reads its own value back).
-- A process whose node id another live process holds claims nothing.
local function claim(keys, args)
  if redis.call('GET', keys[3]) ~= args[4] then
    return redis.error_reply('DUPLICATE ' .. args[2])
  end
  local owner = redis.call('GET', keys[1])
  if owner then
    return owner
  end
  local epoch = redis.call('HINCRBY', keys[2], args[1], 1)
  local mine = args[2] .. ':' .. epoch
  redis.call('SET', keys[1], mine, 'PX', args[3])
  return mine
end

-- KEYS: owner
-- ARGV: owner value
local function release(keys, args)
  if redis.call('GET', keys[1]) == args[1] then
    redis.call('DEL', keys[1])
    return 1
  end
  return 0
end

-- Session writes, fenced per shard.
-- KEYS: sessions, then one owner key per change
-- ARGV: node, then shard, epoch and the session JSON ("" deletes it) per owner key
-- Returns the shard ids whose change was refused.
local function save(keys, args)
  local sessions, node = keys[1], args[1]
  local refused = {}
  for i = 2, #keys do
    local shard, epoch, session = args[3 * i - 4], args[3 * i - 3], args[3 * i - 2]
    if redis.call('GET', keys[i]) == node .. ':' .. epoch then
      if session == '' then
        redis.call('HDEL', sessions, shard)
      else
        redis.call('HSET', sessions, shard, session)
      end
    else
      refused[#refused + 1] = tonumber(shard)
    end
  end
  return refused
end

-- Shard snapshots for the cluster-wide admin view, fenced per shard like sessions.
-- KEYS: status, then one owner key per snapshot
-- ARGV: node, then shard, epoch and the snapshot JSON per owner key
-- Returns how many snapshots were refused.
local function status(keys, args)
  local node = args[1]
  local refused = 0
  for i = 2, #keys do
    local shard, epoch, snapshot = args[3 * i - 4], args[3 * i - 3], args[3 * i - 2]
    if redis.call('GET', keys[i]) == node .. ':' .. epoch then
      redis.call('HSET', keys[1], shard, snapshot)
    else
      refused = refused + 1
    end
  end
  return refused
end

-- One identify permit.
-- KEYS: clock, buckets, budget, grants, owner, grace
-- ARGV: shard, bucket, request, spacing_ms, validity_ms, reserve (-1: the default),
-- owner value, grace_ms (how long to pause after a silence of Redis)
-- Returns {verdict, n}: GRANT (n = ms the grant stays valid), WAIT (n = ms to wait),
-- BUDGET (n = remaining), UNKNOWN (budget not known or past its reset), NOTOWNER.
local function grant(keys, args)
  local clock, buckets, budget, grants, owner, grace = keys[1], keys[2], keys[3], keys[4], keys[5], keys[6]
  local shard, bucket, request = args[1], args[2], args[3]
  local spacing, validity, reserve = tonumber(args[4]), tonumber(args[5]), tonumber(args[6])
  local pause = tonumber(args[8])
  local last = tonumber(redis.call('GET', clock) or '0')
  local now = now_ms(clock)
  -- Every node's heartbeat moves the clock at least twice a second: a longer silence
  -- means Redis was down or restarted, and a grant made just before may be lost with
  -- its data. Nothing is granted for a grace period (the nodes set one too).
  if last > 0 and now - last > 1000 then
    redis.call('SET', grace, 1, 'PX', pause, 'NX')
  end
  if redis.call('GET', owner) ~= args[7] then
    return {'NOTOWNER', 0}
  end
  local held = redis.call('HGET', grants, shard)
  if held then
    local id, expires = string.match(held, '^(.*):(%d+)$')
    if id == request and tonumber(expires) > now then
      return {'GRANT', tonumber(expires) - now}
    end
  end
  local pause = redis.call('PTTL', grace)
  if pause > 0 then
    return {'WAIT', pause}
  end
  local figures = redis.call('HMGET', budget, 'remaining', 'reset_at')
  if not figures[1] or now >= tonumber(figures[2]) then
    return {'UNKNOWN', 0}
  end
  local remaining = tonumber(figures[1])
  if reserve < 0 then
    -- max(10, 5 % of the daily total)
    reserve = math.max(10, math.floor(tonumber(redis.call('HGET', budget, 'total') or '0') / 20))
  end
  if remaining <= reserve then
    return {'BUDGET', remaining}
  end
  local next = tonumber(redis.call('HGET', buckets, bucket) or '0')
  if now < next then
    return {'WAIT', next - now}
  end
  redis.call('HSET', buckets, bucket, ms(now + spacing))
  redis.call('HINCRBY', budget, 'remaining', -1)
  redis.call('HINCRBY', budget, 'granted', 1)
  redis.call('HSET', grants, shard, request .. ':' .. ms(now + validity))
  return {'GRANT', validity}
end

-- The IDENTIFY of a grant was written `elapsed` ms after the node sent its request:
-- the bucket may grant again `gap` ms (window + margin) after that, instead of after
-- the whole validity. The grant was made after the request was sent, so the grant time
-- plus `elapsed` is never earlier than the write.
-- KEYS: grants, buckets
-- ARGV: shard, request, bucket, elapsed_ms, gap_ms, validity_ms, spacing_ms
-- Only a bucket this grant closed is opened early: a newer grant's spacing stands.
local function written(keys, args)
  local held = redis.call('HGET', keys[1], args[1])
  if not held then
    return 0
  end
  local id, expires = string.match(held, '^(.*):(%d+)$')
  if id ~= args[2] then
    return 0
  end
  local granted_at = tonumber(expires) - tonumber(args[6])
  local next = granted_at + tonumber(args[4]) + tonumber(args[5])
  local current = tonumber(redis.call('HGET', keys[2], args[3]) or '0')
  if current == granted_at + tonumber(args[7]) and next < current then
    redis.call('HSET', keys[2], args[3], ms(next))
  end
  redis.call('HDEL', keys[1], args[1])
  return 1
end

-- A grant whose IDENTIFY was never written: Discord did not count it, so it goes back
-- to the budget when that is safe to know, i.e. it was made after the figures were
-- fetched and no refresh is out (a refresh may already have charged it, or may count
-- it again). Otherwise the budget stays low by one, never high.
-- KEYS: grants, budget, budget lease
-- ARGV: shard, request, validity_ms
local function unused(keys, args)
  local held = redis.call('HGET', keys[1], args[1])
  if not held then
    return 0
  end
  local id, expires = string.match(held, '^(.*):(%d+)$')
  if id ~= args[2] then
    return 0
  end
  redis.call('HDEL', keys[1], args[1])
  local granted_at = tonumber(expires) - tonumber(args[3])
  local fetched_at = tonumber(redis.call('HGET', keys[2], 'fetched_at') or '0')
  if fetched_at > 0 and granted_at > fetched_at and redis.call('EXISTS', keys[3]) == 0 then
    redis.call('HINCRBY', keys[2], 'remaining', 1)
    return 1
  end
  return 0
end

-- Starts a budget refresh: one node at a time, and only while one is due (the figures
-- unknown, `every_ms` old or past their reset). A node decides from a reading taken
-- earlier, when another may have refreshed since: a second fetch while grants are
-- being made would charge them twice.
-- KEYS: lease, budget, clock
-- ARGV: node, lease_ms, every_ms
-- Returns the grants counter to charge against the figures fetched, or -1 when another
-- node is refreshing or no refresh is due.
local function budget_begin(keys, args)
  local holder = redis.call('GET', keys[1])
  if holder and holder ~= args[1] then
    return -1
  end
  local now = now_ms(keys[3])
  local figures = redis.call('HMGET', keys[2], 'fetched_at', 'reset_at')
  if figures[1] and now - tonumber(figures[1]) < tonumber(args[3])
      and now < tonumber(figures[2]) then
    return -1
  end
  redis.call('SET', keys[1], args[1], 'PX', args[2])
  return tonumber(redis.call('HGET', keys[2], 'granted') or '0')
end

-- Ends a budget refresh with Discord's figures, charged for the grants made meanwhile.
-- The remaining count never rises before the known reset.
-- KEYS: lease, budget, clock
-- ARGV: node, remaining, total, reset_after_ms, grants counter from budget_begin
-- Returns the remaining count stored, or -1 when the lease was lost.
local function budget_set(keys, args)
  local lease, budget, clock = keys[1], keys[2], keys[3]
  if redis.call('GET', lease) ~= args[1] then
    return -1
  end
  local now = now_ms(clock)
  local granted = tonumber(redis.call('HGET', budget, 'granted') or '0')
  local charged = math.max(0, granted - tonumber(args[5]))
  local value = math.max(0, tonumber(args[2]) - charged)
  local current = redis.call('HMGET', budget, 'remaining', 'reset_at')
  if current[1] and now < tonumber(current[2]) and tonumber(current[1]) < value then
    value = tonumber(current[1])
  end
  redis.call('HSET', budget, 'remaining', ms(value), 'total', args[3],
    'reset_at', ms(now + tonumber(args[4])), 'fetched_at', ms(now))
  redis.call('DEL', lease)
  return value
end

redis.register_function('sk1_join', join)
redis.register_function('sk1_leave', leave)
redis.register_function('sk1_beat', beat)
redis.register_function('sk1_claim', claim)
redis.register_function('sk1_release', release)
redis.register_function('sk1_save', save)
redis.register_function('sk1_status', status)
redis.register_function('sk1_grant', grant)
redis.register_function('sk1_written', written)
redis.register_function('sk1_unused', unused)
redis.register_function('sk1_budget_begin', budget_begin)
redis.register_function('sk1_budget_set', budget_set)
