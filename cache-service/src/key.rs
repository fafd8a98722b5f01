//! Key naming: the one place where cache keys are spelled.
//!
//! An entry key is `{prefix}:{namespace}:{{id}}`. The braces are a Redis Cluster hash
//! tag: the entry's lease (`…:lease`) and fence (`…:fence`) keys share it, so the Lua
//! scripts that touch all three run on a cluster too. A group member's id starts with
//! the group's generation (`g{n}:…`), and the generation counter lives at
//! `{prefix}:{group}:generation`. A member of one [`Scope`] of a group (the list pages
//! of one category, say) has an id that starts with the scope's own generation and its
//! tag (`g{n}s{len}:{value}:…`), and that scope's counter lives at
//! `{prefix}:{group}:s{len}:{value}:generation` (braces in the value escaped, so no
//! counter has a hash tag).

use std::fmt::{self, Write};

/// A family of entries keyed by one id each (for example `product` → one product).
/// The name is also the `namespace` label of the metrics.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::{CacheConfig, CacheService, Namespace};
///
/// const PRODUCT: Namespace = Namespace::new("product");
/// let cache = CacheService::in_memory(CacheConfig::with_prefix("shop"), 10)?;
/// assert_eq!(cache.key(PRODUCT, 42).as_str(), "shop:product:{42}");
/// assert_eq!(PRODUCT.name(), "product");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Namespace(&'static str);

impl Namespace {
    /// A namespace name: lower-case ASCII letters, digits and `_` (checked at compile time
    /// when used in a `const`).
    pub const fn new(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        assert!(!bytes.is_empty(), "namespace name must not be empty");
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            assert!(
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_',
                "namespace name must be [a-z0-9_]"
            );
            i += 1;
        }
        Self(name)
    }

    /// The name, as used in keys and metric labels.
    pub const fn name(self) -> &'static str {
        self.0
    }
}

/// Derived entries that are all invalidated together (for example every list page),
/// in O(1), by bumping the group's generation.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::{CacheConfig, CacheService, Group};
///
/// const PRODUCT_LIST: Group = Group::new("product_list");
/// let cache = CacheService::in_memory(CacheConfig::with_prefix("shop"), 10)?;
/// // One step, however many pages are cached.
/// cache.invalidate_group(PRODUCT_LIST).await?;
/// assert_eq!(PRODUCT_LIST.namespace().name(), "product_list");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Group(Namespace);

impl Group {
    /// A group name, with the same rules as [`Namespace::new`].
    pub const fn new(name: &'static str) -> Self {
        Self(Namespace::new(name))
    }

    /// The group's namespace (its name is the metric label).
    pub const fn namespace(self) -> Namespace {
        self.0
    }

    /// One scope of the group: its members for one value of a column (the list pages of
    /// one category). See [`Scope`].
    pub fn scope(self, value: impl fmt::Display) -> Scope {
        Scope {
            group: self,
            value: Some(value.to_string()),
        }
    }
}

/// A group as a read or an invalidation addresses it: the whole group (a [`Group`]
/// converts into it), or one scope of it ([`Group::scope`]): its members for one value of
/// a column, such as the list pages filtered by one category.
///
/// Each scope has a generation counter of its own, and so has the whole group: moving
/// one leaves the others' members cached. A write that changes a row moves the whole
/// group and the scopes of the row's values before and after the change (with
/// [`Coherence`](crate::Coherence), the [`OutboxTable`](crate::OutboxTable)'s
/// [`ScopedGroup`](crate::ScopedGroup)s say which); a page filtered by category 'a' is
/// then invalidated by writes that touch 'a' only, and the unfiltered pages by every write.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::{CacheConfig, CacheService, Group, Scope};
///
/// const PRODUCT_LIST: Group = Group::new("product_list");
/// let cache = CacheService::in_memory(CacheConfig::with_prefix("shop"), 10)?;
/// let keyboards = PRODUCT_LIST.scope("keyboards");
/// assert_eq!(keyboards.value(), Some("keyboards"));
/// assert_eq!(Scope::from(PRODUCT_LIST).value(), None, "the whole group");
/// // The scope's generation and its tag start the member's id.
/// let page = cache.member_key(keyboards.clone(), "p1:n20");
/// assert_eq!(page.at(7).as_str(), "shop:product_list:{g7s9:keyboards:p1:n20}");
/// // Moves the keyboards' pages on, and no other page.
/// cache.invalidate_group(keyboards).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    group: Group,
    value: Option<String>,
}

impl Scope {
    /// The group this is (a scope of).
    pub fn group(&self) -> Group {
        self.group
    }

    /// The scope's value; `None` for the whole group.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// What sets the scope's keys apart from the whole group's and from other scopes':
    /// `s{len}:{value}` (the length makes it unambiguous whatever the value holds).
    fn tag(&self) -> Option<String> {
        self.value
            .as_ref()
            .map(|value| format!("s{}:{value}", value.len()))
    }
}

impl From<Group> for Scope {
    fn from(group: Group) -> Self {
        Self { group, value: None }
    }
}

impl From<&Scope> for Scope {
    fn from(scope: &Scope) -> Self {
        scope.clone()
    }
}

/// A fully spelled entry key. Built only by [`CacheService::key`](crate::CacheService::key)
/// and [`CacheService::get_or_load_in`](crate::CacheService::get_or_load_in).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::{CacheConfig, CacheService, Namespace};
///
/// let cache = CacheService::in_memory(CacheConfig::with_prefix("shop"), 10)?;
/// // Braces in an id cannot end the Redis Cluster hash tag early.
/// let key = cache.key(Namespace::new("tag"), "a}b");
/// assert_eq!(key.as_str(), "shop:tag:{a%7Db}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    namespace: Namespace,
    key: String,
}

impl CacheKey {
    pub(crate) fn new(prefix: &str, namespace: Namespace, id: &dyn fmt::Display) -> Self {
        let mut key = String::with_capacity(prefix.len() + namespace.0.len() + 16);
        let _ = write!(key, "{prefix}:{}:{{", namespace.0);
        let start = key.len();
        let _ = write!(key, "{id}");
        // Braces inside the id would end the hash tag early.
        if needs_escape(&key[start..]) {
            let escaped = escape(&key[start..]);
            key.truncate(start);
            key.push_str(&escaped);
        }
        key.push('}');
        Self { namespace, key }
    }

    /// The key of the entry's value.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The namespace the key belongs to.
    pub fn namespace(&self) -> Namespace {
        self.namespace
    }

    /// The key of the lease taken on a miss.
    pub(crate) fn lease_key(&self) -> String {
        format!("{}:lease", self.key)
    }

    /// The key of the version fence left by a versioned invalidation.
    pub(crate) fn fence_key(&self) -> String {
        format!("{}:fence", self.key)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// The key of a group member, for any generation of the group: `head`, the generation,
/// `tail` (`{prefix}:{group}:{g` + `42` + `:{member}}`). Lets a backend read the
/// generation and the member's entry in one step.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::{CacheConfig, CacheService, Group};
///
/// let cache = CacheService::in_memory(CacheConfig::with_prefix("shop"), 10)?;
/// let member = cache.member_key(Group::new("product_list"), "p1:n20");
/// assert_eq!(member.at(7).as_str(), "shop:product_list:{g7:p1:n20}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberKey {
    namespace: Namespace,
    head: String,
    tail: String,
}

impl MemberKey {
    pub(crate) fn new(prefix: &str, group: &Scope, member: &dyn fmt::Display) -> Self {
        let namespace = group.group.namespace();
        // After the generation: `:` for a member of the whole group, the scope's tag
        // (which starts with `s`) for a member of a scope, so no two can share a key.
        let template = match group.tag() {
            None => CacheKey::new(prefix, namespace, &format_args!("g:{member}")),
            Some(tag) => CacheKey::new(prefix, namespace, &format_args!("g{tag}:{member}")),
        };
        // The generation goes right after `{g`, before the (possibly escaped) rest.
        let split = prefix.len() + 1 + namespace.name().len() + 1 + "{g".len();
        let (head, tail) = template.key.split_at(split);
        Self {
            namespace,
            head: head.to_owned(),
            tail: tail.to_owned(),
        }
    }

    /// The member's key in `generation`.
    pub fn at(&self, generation: u64) -> CacheKey {
        CacheKey {
            namespace: self.namespace,
            key: format!("{}{generation}{}", self.head, self.tail),
        }
    }

    /// The group's namespace.
    pub fn namespace(&self) -> Namespace {
        self.namespace
    }

    /// What comes before the generation.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// What comes after the generation.
    pub fn tail(&self) -> &str {
        &self.tail
    }
}

/// One key to invalidate after a write.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::{CacheConfig, CacheService, Invalidation, Namespace};
///
/// const PRODUCT: Namespace = Namespace::new("product");
/// let cache = CacheService::in_memory(CacheConfig::with_prefix("shop"), 10)?;
/// // Product 42 is at version 3 now: older entries go, and no older fill is stored later.
/// let changed = Invalidation::at_version(cache.key(PRODUCT, 42), 3);
/// // Product 43 was created: whatever is cached under its id goes, whatever its version.
/// let created = Invalidation::remove(cache.key(PRODUCT, 43));
/// cache.invalidate(&[changed, created]).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    pub(crate) key: CacheKey,
    pub(crate) version: Option<u64>,
}

impl Invalidation {
    /// Removes the entry and voids any outstanding lease on it.
    pub fn remove(key: CacheKey) -> Self {
        Self { key, version: None }
    }

    /// The source row is now at `version` (a deleted row counts as its last version + 1).
    /// Removes the entry unless it already holds `version` or newer, and leaves a fence so
    /// that no fill loaded from an older version is stored afterwards. Applying the same
    /// invalidation twice, or late, is harmless and costs no extra load.
    pub fn at_version(key: CacheKey, version: u64) -> Self {
        Self {
            key,
            version: Some(version),
        }
    }

    /// The key this invalidation applies to.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// The version it fences, if any.
    pub fn version(&self) -> Option<u64> {
        self.version
    }
}

/// The key of the generation counter of `group` (the whole group, or one scope).
pub(crate) fn generation_key(prefix: &str, group: &Scope) -> String {
    let name = group.group.0.0;
    match group.tag() {
        None => format!("{prefix}:{name}:generation"),
        Some(tag) => format!("{prefix}:{name}:{}:generation", escape(&tag)),
    }
}

fn needs_escape(s: &str) -> bool {
    s.contains(['{', '}', '%'])
}

/// `s` with `{`, `}` and `%` percent-encoded: braces would make (or end) a Redis Cluster
/// hash tag; `%` is encoded too, so the encoding stays injective.
fn escape(s: &str) -> String {
    if !needs_escape(s) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| match c {
            '{' => "%7B".to_owned(),
            '}' => "%7D".to_owned(),
            '%' => "%25".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRODUCT: Namespace = Namespace::new("product");

    #[test]
    fn keys_carry_prefix_namespace_and_a_hash_tag() {
        let key = CacheKey::new("shop", PRODUCT, &42);
        assert_eq!(key.as_str(), "shop:product:{42}");
        assert_eq!(key.lease_key(), "shop:product:{42}:lease");
        assert_eq!(key.fence_key(), "shop:product:{42}:fence");
    }

    #[test]
    fn braces_in_ids_cannot_break_the_hash_tag() {
        let key = CacheKey::new("shop", PRODUCT, &"a}b{c%");
        assert_eq!(key.as_str(), "shop:product:{a%7Db%7Bc%25}");
        assert_ne!(
            CacheKey::new("shop", PRODUCT, &"%7D"),
            CacheKey::new("shop", PRODUCT, &"}")
        );
    }

    #[test]
    fn a_member_key_is_the_entry_key_of_its_generation() {
        let list = Group::new("product_list");
        let member = MemberKey::new("shop", &list.into(), &"p1:n20:{c}");
        assert_eq!(
            member.at(7).as_str(),
            "shop:product_list:{g7:p1:n20:%7Bc%7D}"
        );
        assert_eq!(
            member.at(7),
            CacheKey::new("shop", list.namespace(), &"g7:p1:n20:{c}")
        );
        assert_eq!(
            format!("{}{}{}", member.head(), 7, member.tail()),
            member.at(7).as_str()
        );
    }

    #[test]
    fn generation_key_is_outside_every_member_key() {
        assert_eq!(
            generation_key("shop", &Group::new("product_list").into()),
            "shop:product_list:generation"
        );
    }

    #[test]
    fn each_scope_has_its_own_counter_and_members() {
        let list = Group::new("product_list");
        assert_eq!(
            generation_key("shop", &list.scope("mice")),
            "shop:product_list:s4:mice:generation"
        );
        // No hash tag in a counter, whatever the value holds.
        assert_eq!(
            generation_key("shop", &list.scope("{a}")),
            "shop:product_list:s3:%7Ba%7D:generation"
        );
        assert_eq!(
            MemberKey::new("shop", &list.scope("mice"), &"p1")
                .at(7)
                .as_str(),
            "shop:product_list:{g7s4:mice:p1}"
        );
    }

    #[test]
    fn members_of_different_scopes_never_share_a_key() {
        let list = Group::new("product_list");
        // Counters are separate, so two of them may stand at the same generation.
        let keys = [
            MemberKey::new("shop", &list.into(), &"s1:a:p1").at(7),
            MemberKey::new("shop", &list.scope("a"), &"p1").at(7),
            MemberKey::new("shop", &list.scope("a:p1"), &"").at(7),
            MemberKey::new("shop", &list.scope(""), &"a:p1").at(7),
            MemberKey::new("shop", &list.scope("s1"), &"a:p1").at(7),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
