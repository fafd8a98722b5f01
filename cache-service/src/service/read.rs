//! The read path: a hit, or a miss that loads once per key (single-flight), under a
//! lease, and fills unless the value may predate a write.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use bytes::{Buf, Bytes};
use serde::de::DeserializeOwned;

use super::{CacheService, Cacheable};
use crate::backend::{FillOutcome, Lease, LeaseToken, Lookup};
use crate::codec::{self, Entry};
use crate::error::{CacheError, Result};
use crate::flight::{self, Leader, Role};
use crate::key::{CacheKey, Invalidation, MemberKey, Scope, generation_key};

/// How many times a reader joins another's load before loading on its own.
const MAX_JOINS: usize = 3;

impl CacheService {
    /// Returns the cached value of `key`, or runs `loader` on a miss and caches what it
    /// returns (`None`, "no such row", is cached briefly too).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService, Cacheable, Namespace};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # struct Note { id: i64, version: u64 }
    /// # impl Cacheable for Note { fn version(&self) -> u64 { self.version } }
    ///
    /// const NOTE: Namespace = Namespace::new("note");
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// let key = cache.key(NOTE, 1);
    /// let load = || async { Ok::<_, std::io::Error>(Some(Note { id: 1, version: 1 })) };
    /// assert_eq!(cache.get_or_load(&key, load).await?, Some(Note { id: 1, version: 1 }));
    /// // A hit: the loader does not run.
    /// let unused = || async { Err::<Option<Note>, _>(std::io::Error::other("not run")) };
    /// assert_eq!(cache.get_or_load(&key, unused).await?.map(|note| note.id), Some(1));
    /// // No such row: cached as absent, briefly.
    /// let missing = cache.key(NOTE, 2);
    /// let absent = || async { Ok::<Option<Note>, std::io::Error>(None) };
    /// assert_eq!(cache.get_or_load(&missing, absent).await?, None);
    /// assert_eq!(cache.get_or_load(&missing, unused).await?, None);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Never fails because of the cache: a backend error is counted and logged and the
    /// loader's value is returned. Errors are the loader's own.
    pub async fn get_or_load<T: Cacheable, E>(
        &self,
        key: &CacheKey,
        loader: impl AsyncFnOnce() -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        self.read::<Decoded, _, _>(Target::Key(key), loader).await
    }

    /// Like [`get_or_load`](Self::get_or_load), but hands back the value's JSON as it is
    /// stored, for a server that sends it on as a response body: a hit decodes nothing
    /// and copies nothing (the bytes are a slice of the backend's reply). On a miss the
    /// loaded value is serialized once, for the cache and for the caller.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheError, CacheService, Cacheable, Namespace};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # struct Note { id: i64, version: u64 }
    /// # impl Cacheable for Note { fn version(&self) -> u64 { self.version } }
    ///
    /// const NOTE: Namespace = Namespace::new("note");
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// let key = cache.key(NOTE, 1);
    /// // The loader's error type takes the cache's (serializing a loaded value can fail).
    /// let load = || async { Ok::<_, CacheError>(Some(Note { id: 1, version: 3 })) };
    /// let loaded = cache.get_or_load_json(&key, load).await?.expect("a row");
    /// assert_eq!(loaded.version, 3);
    /// assert_eq!(&loaded.json[..], br#"{"id":1,"version":3}"#);
    /// // A hit hands back the stored bytes, undecoded.
    /// let unused = || async { Err::<Option<Note>, _>(CacheError::Backend("not run".into())) };
    /// assert_eq!(cache.get_or_load_json(&key, unused).await?, Some(loaded));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Compatibility
    ///
    /// The JSON is what `T`'s `Serialize` wrote when the entry was filled. A release
    /// that changes that shape must also change the key prefix (or the epoch): entries
    /// are not decoded on a hit, so nothing else would notice the old shape before they
    /// expire.
    pub async fn get_or_load_json<T: Cacheable, E: From<CacheError>>(
        &self,
        key: &CacheKey,
        loader: impl AsyncFnOnce() -> Result<Option<T>, E>,
    ) -> Result<Option<CachedJson>, E> {
        self.read::<AsJson, _, _>(Target::Key(key), loader).await
    }

    /// Like [`get_or_load`](Self::get_or_load) for a member of `group` (a [`Group`],
    /// or one [`Scope`] of it): the group's generation is read first and is part of the
    /// key, so a value loaded before the group was invalidated is never served after it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService, Cacheable, Group};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # struct Page { ids: Vec<i64> }
    /// # impl Cacheable for Page { fn version(&self) -> u64 { 0 } } // a group member
    ///
    /// const NOTE_LIST: Group = Group::new("note_list");
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// let page = |ids: Vec<i64>| async move { Ok::<_, std::io::Error>(Some(Page { ids })) };
    /// // Every note's first page, and the first page of the notes in folder "work".
    /// let all = cache.get_or_load_in(NOTE_LIST, "p1", || page(vec![1, 2])).await?;
    /// let work = cache.get_or_load_in(NOTE_LIST.scope("work"), "p1", || page(vec![2])).await?;
    /// assert_eq!((all.unwrap().ids, work.unwrap().ids), (vec![1, 2], vec![2]));
    ///
    /// // Note 3 was created in folder "home": every note's pages and home's move on.
    /// cache.invalidate_write::<cache_service::Scope>(
    ///     &[],
    ///     &[NOTE_LIST.into(), NOTE_LIST.scope("home")],
    /// ).await?;
    /// let all = cache.get_or_load_in(NOTE_LIST, "p1", || page(vec![1, 2, 3])).await?;
    /// let work = cache.get_or_load_in(NOTE_LIST.scope("work"), "p1", || page(vec![])).await?;
    /// assert_eq!((all.unwrap().ids, work.unwrap().ids), (vec![1, 2, 3], vec![2]), "work's is still cached");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`Group`]: crate::Group
    pub async fn get_or_load_in<T: Cacheable, E>(
        &self,
        group: impl Into<Scope>,
        member: impl fmt::Display,
        loader: impl AsyncFnOnce() -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        let target = self.member_target(&group.into(), &member);
        self.read::<Decoded, _, _>(target, loader).await
    }

    /// [`get_or_load_json`](Self::get_or_load_json) for a member of `group` (see
    /// [`get_or_load_in`](Self::get_or_load_in)).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService, Cacheable, Group};
    /// # #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// # struct Page { ids: Vec<i64> }
    /// # impl Cacheable for Page { fn version(&self) -> u64 { 0 } } // a group member
    ///
    /// const NOTE_LIST: Group = Group::new("note_list");
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// let page = || async { Ok::<_, cache_service::CacheError>(Some(Page { ids: vec![4, 5] })) };
    /// let json = cache.get_or_load_json_in(NOTE_LIST.scope("work"), "p1", page).await?;
    /// assert_eq!(&json.expect("a page").json[..], br#"{"ids":[4,5]}"#);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_or_load_json_in<T: Cacheable, E: From<CacheError>>(
        &self,
        group: impl Into<Scope>,
        member: impl fmt::Display,
        loader: impl AsyncFnOnce() -> Result<Option<T>, E>,
    ) -> Result<Option<CachedJson>, E> {
        let target = self.member_target(&group.into(), &member);
        self.read::<AsJson, _, _>(target, loader).await
    }

    /// The one read behind the four public forms: a hit is served by
    /// [`look_up`](Self::look_up), which does not know the loader's type; a miss goes on
    /// to [`load`](Self::load).
    async fn read<Fm: Form<T, E>, T: Cacheable, E>(
        &self,
        target: Target<'_>,
        loader: impl AsyncFnOnce() -> Result<Option<T>, E>,
    ) -> Result<Option<Fm::Output>, E> {
        let key = match self.look_up::<T, E, Fm>(&target).await {
            Found::Value(value) => return Ok(value),
            Found::Miss(key) => key,
        };
        // Boxed: the miss path holds the loader's future (a database query, of any size)
        // and the lease and single-flight waits; unboxed, every read's future carries
        // their size, hits included (`ProductService::find_by_id_json`'s future: 448
        // bytes boxed, 2 112 not).
        Box::pin(self.load::<Fm, T, E>(key, loader)).await
    }

    /// The target of a read of a member of `group` (the whole group, or one scope).
    /// Members are invalidated only by moving the generation: they are as fresh as the
    /// generation's shard.
    fn member_target(&self, group: &Scope, member: &dyn fmt::Display) -> Target<'static> {
        let prefix = self.prefix();
        Target::Member(Box::new((
            generation_key(&prefix, group),
            MemberKey::new(&prefix, group, member),
        )))
    }

    /// The hit path: the entry if it can be served; otherwise the key whose miss path
    /// runs, or `None` when the cache is skipped (breaker open, unchecked connection, a
    /// failed read), counted as an error and a load.
    async fn look_up<'a, T, E, Fm>(
        &'a self,
        target: &'a Target<'_>,
    ) -> Found<Fm::Output, Option<Cow<'a, CacheKey>>>
    where
        T: Cacheable,
        Fm: Form<T, E>,
    {
        let (key, read) = match *target {
            Target::Key(key) => {
                let namespace = key.namespace().name();
                if !self.inner.breaker.allows_reads(self.shard_of(key.as_str())) {
                    return bypass(namespace);
                }
                let read = self.inner.backend.get(key).await;
                if !self.connection_checked() {
                    return bypass(namespace);
                }
                (Cow::Borrowed(key), read)
            }
            Target::Member(ref member) => {
                let (generation_key, member) = &**member;
                let namespace = member.namespace().name();
                if !self
                    .inner
                    .breaker
                    .allows_reads(self.shard_of(generation_key))
                {
                    return bypass(namespace);
                }
                let read = self.inner.backend.get_member(generation_key, member).await;
                if !self.connection_checked() {
                    return bypass(namespace);
                }
                match read {
                    Ok((generation, entry)) => (Cow::Owned(member.at(generation)), Ok(entry)),
                    Err(error) => {
                        self.trip(generation_key);
                        tracing::warn!(group = namespace, %error, "cache read of a group member failed; loading from the source");
                        return bypass(namespace);
                    }
                }
            }
        };
        let namespace = key.namespace().name();
        match read {
            Ok(Some(bytes)) => match Fm::from_entry(bytes) {
                Some(value) => {
                    count_request(namespace, "hit");
                    return Found::Value(value);
                }
                None => {
                    count_request(namespace, "miss");
                    // Written by another release or schema: replace it.
                    let _ = self
                        .inner
                        .backend
                        .invalidate(
                            &Invalidation::remove(key.as_ref().clone()),
                            self.inner.config.fence_ttl,
                        )
                        .await;
                }
            },
            Ok(None) => count_request(namespace, "miss"),
            Err(error) => {
                self.trip(key.as_str());
                tracing::warn!(%key, %error, "cache read failed; loading from the source");
                return bypass(namespace);
            }
        }
        Found::Miss(Some(key))
    }

    /// The miss path: joins or leads the key's single flight (none when the cache is
    /// skipped), runs the loader, fills.
    async fn load<Fm: Form<T, E>, T: Cacheable, E>(
        &self,
        key: Option<Cow<'_, CacheKey>>,
        loader: impl AsyncFnOnce() -> Result<Option<T>, E>,
    ) -> Result<Option<Fm::Output>, E> {
        let miss = match key {
            Some(key) => match self.single_flight::<T, E, Fm>(key).await {
                Found::Value(value) => return Ok(value),
                Found::Miss(miss) => miss,
            },
            None => Miss {
                lease: None,
                leader: None,
            },
        };
        // An error drops `miss`, which releases the followers (they read again).
        let value = loader().await?;
        self.fill::<T, E, Fm>(miss, value).await
    }

    /// Shares one load per key in this process: a follower is served what its leader
    /// stored; a leader goes on to the lease.
    async fn single_flight<'a, T, E, Fm>(
        &'a self,
        key: Cow<'a, CacheKey>,
    ) -> Found<Fm::Output, Miss<'a>>
    where
        T: Cacheable,
        Fm: Form<T, E>,
    {
        for _ in 0..MAX_JOINS {
            match self.inner.flights.join(key.as_str()) {
                Role::Leader(leader) => {
                    return self.lease::<T, E, Fm>(key, Some(leader)).await;
                }
                Role::Follower(rx) => {
                    if let Some(value) = flight::follow(rx).await.and_then(Fm::from_entry) {
                        return Found::Value(value);
                    }
                }
            }
        }
        self.lease::<T, E, Fm>(key, None).await
    }

    /// Takes the lease (or waits for another's fill): a hit if the entry was filled
    /// meanwhile, else the miss to load (filled only if the lease was taken).
    async fn lease<'a, T, E, Fm>(
        &'a self,
        key: Cow<'a, CacheKey>,
        leader: Option<Leader<'a>>,
    ) -> Found<Fm::Output, Miss<'a>>
    where
        T: Cacheable,
        Fm: Form<T, E>,
    {
        let config = &self.inner.config;
        let namespace = key.namespace().name();
        let token = LeaseToken::random();
        let mut waited = Duration::ZERO;
        let mut pause = Duration::from_millis(5);
        let leased = loop {
            let lookup = self
                .inner
                .backend
                .get_or_lease(Lease::new(&key, token), config.lease_ttl)
                .await;
            if !self.connection_checked() {
                break false;
            }
            match lookup {
                Ok(Lookup::Hit(bytes)) => {
                    if let Some(value) = Fm::from_entry(bytes) {
                        // `leader` goes without sharing: its followers read again.
                        return Found::Value(value);
                    }
                    break false;
                }
                Ok(Lookup::Leased) => break true,
                Ok(Lookup::Busy) if waited < config.lease_wait => {
                    metrics::counter!("cache_lease_waits_total", "namespace" => namespace)
                        .increment(1);
                    tokio::time::sleep(pause).await;
                    waited += pause;
                    pause = (pause * 2).min(
                        config
                            .lease_wait
                            .saturating_sub(waited)
                            .max(Duration::from_millis(1)),
                    );
                }
                Ok(Lookup::Busy) => break false,
                // The request was counted (a miss) before the lease: counted once.
                Err(error) => {
                    self.trip(key.as_str());
                    tracing::warn!(%key, %error, "cache lease failed; loading without caching");
                    break false;
                }
            }
        };
        count_load(namespace);
        Found::Miss(Miss {
            lease: leased.then_some((key, token)),
            leader,
        })
    }

    /// Fills the entry with the loaded `value` if the miss holds the lease, and shares
    /// what was stored with the followers. Returns the value in the read's form.
    async fn fill<T, E, Fm>(
        &self,
        miss: Miss<'_>,
        value: Option<T>,
    ) -> Result<Option<Fm::Output>, E>
    where
        T: Cacheable,
        Fm: Form<T, E>,
    {
        let Miss { lease, leader } = miss;
        let Some((key, token)) = lease else {
            return Fm::from_loaded(value, None);
        };
        let config = &self.inner.config;
        let namespace = key.namespace().name();
        let (entry, ttl) = match &value {
            Some(v) => match codec::encode(v.version(), v) {
                Ok(entry) => (
                    Bytes::from(entry),
                    jittered(config.ttl_for(key.namespace()), config.ttl_jitter),
                ),
                Err(error) => {
                    tracing::error!(%key, %error, "value cannot be serialized; not cached");
                    return Fm::from_loaded(value, None);
                }
            },
            None => (
                Bytes::from(codec::encode_absent()),
                jittered(config.negative_ttl, config.ttl_jitter),
            ),
        };
        let shared = match self
            .inner
            .backend
            .fill(Lease::new(&key, token), &entry, ttl)
            .await
        {
            Ok(FillOutcome::Stored) => Some(entry.clone()),
            Ok(refused) => {
                let reason = if refused == FillOutcome::Fenced {
                    "fence"
                } else {
                    "lease"
                };
                metrics::counter!("cache_fills_refused_total", "namespace" => namespace, "reason" => reason).increment(1);
                tracing::debug!(%key, reason, "fill refused: the value may predate a write");
                None
            }
            Err(error) => {
                self.trip(key.as_str());
                tracing::warn!(%key, %error, "cache fill failed");
                None
            }
        };
        if let Some(leader) = leader {
            leader.finish(shared);
        }
        Fm::from_loaded(value, Some(&entry))
    }
}

/// What a read reads: an entry's key, or a group member's key and its group's
/// generation key (the generation is read first, in the same step). Boxed, so that an
/// item read's future does not carry the member's size.
enum Target<'a> {
    Key(&'a CacheKey),
    Member(Box<(String, MemberKey)>),
}

/// A step of a read: a value to serve (`None`: "no such row" was cached), or what the
/// next step needs.
enum Found<V, M> {
    Value(Option<V>),
    Miss(M),
}

/// A read that skips the cache (breaker open, unchecked connection, a failed read):
/// counted as an error and a load.
fn bypass<V, K>(namespace: &'static str) -> Found<V, Option<K>> {
    count_request(namespace, "error");
    count_load(namespace);
    Found::Miss(None)
}

/// What becomes of a loaded value.
struct Miss<'a> {
    /// The key and the lease this reader holds on it: the value is filled under it.
    /// `None`: nothing is filled (the cache is skipped or failed, or another reader held
    /// the lease too long).
    lease: Option<(Cow<'a, CacheKey>, LeaseToken)>,
    /// The flight this reader leads, if any: its followers get what the fill stored
    /// (dropped unfinished, it sends them to read again).
    leader: Option<Leader<'a>>,
}

/// A cached value as the JSON it is stored as (see
/// [`CacheService::get_or_load_json`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedJson {
    /// The value's [`Cacheable::version`].
    pub version: u64,
    /// The value as its `Serialize` implementation writes it with `serde_json`.
    pub json: Bytes,
}

/// How a read hands back what it found: decoded ([`Decoded`]) or as stored JSON
/// ([`AsJson`]). Both share one read path, so they cannot drift apart on the rules
/// (leases, fences, single-flight, fail-open).
trait Form<T, E> {
    type Output;

    /// From a stored entry; `None` when it cannot be read (another format or schema).
    fn from_entry(entry: Bytes) -> Option<Option<Self::Output>>;

    /// From a freshly loaded value; `entry` is its encoding, when one was made.
    fn from_loaded(value: Option<T>, entry: Option<&Bytes>) -> Result<Option<Self::Output>, E>;
}

/// Reads decode into `T`.
struct Decoded;

impl<T: Cacheable, E> Form<T, E> for Decoded {
    type Output = T;

    fn from_entry(entry: Bytes) -> Option<Option<T>> {
        decode(&entry)
    }

    fn from_loaded(value: Option<T>, _entry: Option<&Bytes>) -> Result<Option<T>, E> {
        Ok(value)
    }
}

/// Reads hand back the stored JSON.
struct AsJson;

impl<T: Cacheable, E: From<CacheError>> Form<T, E> for AsJson {
    type Output = CachedJson;

    fn from_entry(entry: Bytes) -> Option<Option<CachedJson>> {
        json_of(entry)
    }

    fn from_loaded(value: Option<T>, entry: Option<&Bytes>) -> Result<Option<CachedJson>, E> {
        if let Some(found) = entry.cloned().and_then(json_of) {
            return Ok(found);
        }
        let Some(value) = value else {
            return Ok(None);
        };
        let json = serde_json::to_vec(&value)
            .map_err(|error| E::from(CacheError::Serialize(error.to_string())))?;
        Ok(Some(CachedJson {
            version: value.version(),
            json: Bytes::from(json),
        }))
    }
}

/// The JSON payload of an entry: the same buffer with the header skipped (no copy, no
/// new reference).
fn json_of(mut entry: Bytes) -> Option<Option<CachedJson>> {
    let (version, header) = match codec::decode(&entry)? {
        Entry::Present { version, payload } => (version, entry.len() - payload.len()),
        Entry::Absent => return Some(None),
    };
    entry.advance(header);
    Some(Some(CachedJson {
        version,
        json: entry,
    }))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<Option<T>> {
    match codec::decode(bytes)? {
        Entry::Present { payload, .. } => serde_json::from_slice(payload).ok().map(Some),
        Entry::Absent => Some(None),
    }
}

pub(super) fn jittered(ttl: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return ttl;
    }
    let factor = 1.0 + jitter * (2.0 * rand::random::<f64>() - 1.0);
    ttl.mul_f64(factor).max(Duration::from_millis(1))
}

fn count_request(namespace: &'static str, result: &'static str) {
    metrics::counter!("cache_requests_total", "namespace" => namespace, "result" => result)
        .increment(1);
}

fn count_load(namespace: &'static str) {
    metrics::counter!("cache_loads_total", "namespace" => namespace).increment(1);
}
