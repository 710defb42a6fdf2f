//! What Postern keeps in Redis, and the Lua scripts that change it. Each
//! script runs atomically in Redis and reads the time from Redis itself
//! (`TIME`), so that the nodes' clocks never have to agree.
//!
//! Keys (all under `postern:`; one cluster per Redis database):
//! - `postern:nodes`: sorted set, node name scored by the time (ms) its
//!   registration expires.
//! - `postern:hosts`: set of the lease keys in use, for `postern cluster`.
//! - `postern:lease:HOST`: sorted set of one host's leases, each member
//!   `NODE/BOOT/ID` scored by its expiry (ms). Expired members are removed
//!   before counting, so a dead node's leases stop counting by themselves.
//! - `postern:signals`: sorted set of the slow-down signals of the last
//!   minute (`SEQ`, node, class, host and reply, separated by U+001F),
//!   scored by when they came.
//! - `postern:throttle:NAME`: hash with the bucket's `tokens` and the time
//!   (`at`, ms) they were counted.

use redis::Script;

/// The sorted set of live nodes.
pub(crate) const NODES: &str = "postern:nodes";
/// The set of lease keys.
pub(crate) const HOSTS: &str = "postern:hosts";
/// The sorted set of slow-down signals, scored by when they came (ms);
/// kept a minute.
pub(crate) const SIGNALS: &str = "postern:signals";

/// Separates the fields of a signal (never in a host, class or reply).
pub(crate) const FIELD: char = '\u{1f}';

/// The lease key of a host.
pub(crate) fn lease_key(host: &str) -> String {
    format!("postern:lease:{host}")
}

/// The host a lease key names.
pub(crate) fn host_of(key: &str) -> &str {
    key.strip_prefix("postern:lease:").unwrap_or(key)
}

/// The bucket key of a throttle.
pub(crate) fn throttle_key(name: &str) -> String {
    format!("postern:throttle:{name}")
}

/// The node that holds a lease member (`NODE/BOOT/ID`).
pub(crate) fn node_of(member: &str) -> &str {
    member.rsplitn(3, '/').nth(2).unwrap_or(member)
}

const NOW: &str = "local t = redis.call('TIME')\n\
                   local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// The key that says another node waits for a lease at a host.
pub(crate) fn wanted_key(host: &str) -> String {
    format!("postern:wanted:{host}")
}

/// KEYS: lease key, hosts set, wanted key. ARGV: member, limit, TTL (ms),
/// node. Returns `{granted (0|1), leases counted}`; a refusal marks the
/// host wanted by the node for 3 s (each refusal renews it).
pub(crate) fn acquire() -> Script {
    Script::new(&format!(
        "{NOW}
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        local n = redis.call('ZCARD', KEYS[1])
        if n >= tonumber(ARGV[2]) then
            redis.call('SET', KEYS[3], ARGV[4], 'PX', 3000)
            return {{0, n}}
        end
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        redis.call('SADD', KEYS[2], KEYS[1])
        return {{1, n + 1}}"
    ))
}

/// KEYS: nodes set, hosts set, signals, then one lease key per lease
/// held. ARGV: node, TTL (ms), the time (ms) of the last signals read (-1:
/// none yet), then the member of each lease, in the keys' order.
/// Registers the node and renews (or, after Redis lost them, restores)
/// every lease the node holds. Returns `{live nodes, now, {signal, ...},
/// {host, ...}}`: the signals since the time given, and the hosts of the
/// node's leases that another node waits for.
pub(crate) fn heartbeat() -> Script {
    Script::new(&format!(
        "{NOW}
        local ttl = tonumber(ARGV[2])
        redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
        for i = 4, #KEYS do
            redis.call('ZADD', KEYS[i], now + ttl, ARGV[i])
            redis.call('PEXPIRE', KEYS[i], ttl)
            redis.call('SADD', KEYS[2], KEYS[i])
        end
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        local signals = {{}}
        if tonumber(ARGV[3]) >= 0 then
            signals = redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[3], '+inf')
        end
        local contended = {{}}
        local seen = {{}}
        for i = 4, #KEYS do
            local host = string.sub(KEYS[i], 15)
            if not seen[host] then
                seen[host] = true
                local by = redis.call('GET', 'postern:wanted:' .. host)
                if by and by ~= ARGV[1] then table.insert(contended, host) end
            end
        end
        return {{redis.call('ZCARD', KEYS[1]), now, signals, contended}}"
    ))
}

/// KEYS: signals. ARGV: the signal. Adds it, and forgets signals older
/// than a minute.
pub(crate) fn signal() -> Script {
    Script::new(&format!(
        "{NOW}
        redis.call('ZADD', KEYS[1], now, ARGV[1])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
        redis.call('PEXPIRE', KEYS[1], 120000)
        return 1"
    ))
}

/// KEYS: the bucket. ARGV: capacity, tokens per ms, tokens wanted.
/// Returns `{tokens granted, ms until the next token when none}`.
pub(crate) fn take() -> Script {
    Script::new(&format!(
        "{NOW}
        local cap = tonumber(ARGV[1])
        local rate = tonumber(ARGV[2])
        local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
        local tokens = tonumber(b[1]) or cap
        local at = tonumber(b[2]) or now
        if now > at then tokens = math.min(cap, tokens + (now - at) * rate) end
        local got = math.min(tonumber(ARGV[3]), math.floor(tokens))
        tokens = tokens - got
        redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
        redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 60000)
        local wait = 0
        if got == 0 then wait = math.ceil((1 - tokens) / rate) end
        return {{got, wait}}"
    ))
}

/// KEYS: nodes set, hosts set. ARGV: node, the prefix of this run's lease
/// members (`NODE/BOOT/`). Removes the node and every lease of this run,
/// including any whose release is still on its way. Returns the leases
/// removed.
pub(crate) fn leave() -> Script {
    Script::new(
        "redis.call('ZREM', KEYS[1], ARGV[1])
        local n = 0
        for _, k in ipairs(redis.call('SMEMBERS', KEYS[2])) do
            for _, m in ipairs(redis.call('ZRANGE', k, 0, -1)) do
                if string.sub(m, 1, #ARGV[2]) == ARGV[2] then
                    redis.call('ZREM', k, m)
                    n = n + 1
                end
            end
        end
        return n",
    )
}

/// KEYS: nodes set, hosts set. Returns `{now, {node, expiry, ...},
/// lease key, {member, ...}, lease key, ...}` after removing what expired.
pub(crate) fn status() -> Script {
    Script::new(&format!(
        "{NOW}
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        local out = {{now, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}}
        for _, k in ipairs(redis.call('SMEMBERS', KEYS[2])) do
            redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
            local m = redis.call('ZRANGE', k, 0, -1)
            if #m == 0 then
                redis.call('SREM', KEYS[2], k)
            else
                table.insert(out, k)
                table.insert(out, m)
            end
        end
        return out"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(host_of(&lease_key("b/192.0.2.1:25")), "b/192.0.2.1:25");
        assert_eq!(node_of("mta/a/5f/17"), "mta/a");
        assert_eq!(node_of("odd"), "odd");
    }
}
