//! The Lua scripts. Each touches keys of one hash slot (see [`key`](crate::key)), except
//! the two that span entries on a standalone Redis only (`GET_MEMBER`,
//! `INVALIDATE_WRITE`): a cluster runs those as separate steps.

use fred::types::scripts::Script;

/// Reads the version from an entry's header (see [`codec`](crate::codec)); -1 for bytes
/// in another format, so they always count as older.
const ENTRY_VERSION: &str = r#"
local function entry_version(v)
  if string.len(v) < 10 or string.byte(v, 1) ~= 1 then return -1 end
  local n = 0
  for i = 2, 9 do n = n * 256 + string.byte(v, i) end
  return n
end
"#;

/// KEYS: value, lease. ARGV: token, lease ttl (ms).
/// Returns {1, value} on a hit, {0} when the lease was taken, {2} when another holds it.
const GET_OR_LEASE: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
return {2}
"#;

/// KEYS: value, lease, fence. ARGV: token, entry, ttl (ms).
/// Returns 0 stored, 1 lease lost, 2 fenced.
const FILL: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 1 end
redis.call('DEL', KEYS[2])
local fence = redis.call('GET', KEYS[3])
if fence and entry_version(ARGV[2]) < tonumber(fence) then return 2 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 0
"#;

/// Applies one invalidation (see [`Invalidation`]): `version` '' removes the entry and
/// its lease; a version removes older entries and raises the fence to it.
const INVALIDATE_FN: &str = r#"
local function invalidate(value, lease, fence_key, version, fence_ttl)
  if version == '' then
    redis.call('DEL', value, lease)
    return
  end
  local v = tonumber(version)
  local current = redis.call('GET', value)
  if current and entry_version(current) < v then redis.call('DEL', value) end
  local fence = redis.call('GET', fence_key)
  if fence and tonumber(fence) >= v then
    redis.call('PEXPIRE', fence_key, fence_ttl)
  else
    redis.call('SET', fence_key, version, 'PX', fence_ttl)
  end
end
"#;

/// Moves a group to its next generation, or seeds a lost counter from the clock.
const BUMP_FN: &str = r#"
-- INCR's integer reply, not tostring(): Lua 5.1 prints numbers with 14 significant
-- digits, so a clock-seeded counter (16 digits) would come back as "1.7957e+15".
local function bump(key, seed)
  if redis.call('EXISTS', key) == 1 then return redis.call('INCR', key) end
  redis.call('SET', key, seed)
  return seed
end
"#;

/// KEYS: value, lease, fence. ARGV: version ('' = unconditional), fence ttl (ms).
const INVALIDATE: &str = r#"
invalidate(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
return 1
"#;

/// KEYS: generation. ARGV: seed from the clock.
const GENERATION: &str = r#"
local g = redis.call('GET', KEYS[1])
if g then return g end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"#;

/// A group member's entry with the group's generation, in one step. The member's key
/// depends on the generation, so it is built here and is not in KEYS: standalone Redis
/// only (a cluster reads the two in turn).
/// KEYS: generation. ARGV: member key head, member key tail, seed from the clock.
/// Returns {generation} or {generation, entry}.
const GET_MEMBER: &str = r#"
local g = redis.call('GET', KEYS[1])
if not g then
  redis.call('SET', KEYS[1], ARGV[3])
  g = ARGV[3]
end
return {g, redis.call('GET', ARGV[1] .. g .. ARGV[2])}
"#;

/// KEYS: generation. ARGV: seed from the clock.
const BUMP_GENERATION: &str = r#"
return bump(KEYS[1], ARGV[1])
"#;

/// One write's invalidations in one step: the groups first, then the items, so an
/// item's fence never exists without its groups having moved on (what
/// `CacheService::replay_write` relies on); a failing group bump stops the script
/// before any item.
/// KEYS: the groups' generation keys, then value, lease, fence of each item.
/// ARGV: number of groups, clock seed, fence ttl (ms), then each item's version.
const INVALIDATE_WRITE: &str = r#"
local groups = tonumber(ARGV[1])
for i = 1, groups do bump(KEYS[i], ARGV[2]) end
local item = 0
for k = groups + 1, #KEYS, 3 do
  item = item + 1
  invalidate(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[3 + item], ARGV[3])
end
return 1
"#;

pub(super) struct Scripts {
    pub(super) get_or_lease: Script,
    pub(super) fill: Script,
    pub(super) invalidate: Script,
    pub(super) generation: Script,
    pub(super) get_member: Script,
    pub(super) bump_generation: Script,
    pub(super) invalidate_write: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            get_or_lease: Script::from_lua(GET_OR_LEASE),
            fill: Script::from_lua(format!("{ENTRY_VERSION}{FILL}")),
            invalidate: Script::from_lua(format!("{ENTRY_VERSION}{INVALIDATE_FN}{INVALIDATE}")),
            generation: Script::from_lua(GENERATION),
            get_member: Script::from_lua(GET_MEMBER),
            bump_generation: Script::from_lua(format!("{BUMP_FN}{BUMP_GENERATION}")),
            invalidate_write: Script::from_lua(format!(
                "{ENTRY_VERSION}{INVALIDATE_FN}{BUMP_FN}{INVALIDATE_WRITE}"
            )),
        }
    }
}
