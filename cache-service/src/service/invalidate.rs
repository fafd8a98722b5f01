//! Invalidation: what a committed write made stale goes (entries, fenced at their rows'
//! versions; groups and scopes, moved to new generations), and the replay of what an
//! outbox still owes.

use std::collections::HashMap;

use futures::future::join_all;

use super::CacheService;
use crate::backend::WriteInvalidation;
use crate::error::Result;
use crate::key::{CacheKey, Invalidation, Scope, generation_key};

/// What outbox rows owe, as a relay replays them ([`CacheService::replay`]).
#[derive(Debug, Default)]
pub(crate) struct Owed {
    /// Per entity: an unconditional removal if one is owed, and a fence at the highest
    /// version owed.
    pub(crate) items: Vec<Invalidation>,
    /// The whole groups of the rows' tables, once each.
    pub(crate) groups: Vec<Scope>,
    /// Per row and scope it touched: what proves that scope moved for it.
    pub(crate) scoped: Vec<ScopedOwed>,
}

/// One scope a row touched (the value of its table's scope column before or after the
/// change).
#[derive(Debug)]
pub(crate) struct ScopedOwed {
    /// The row's entry.
    pub(crate) key: CacheKey,
    /// The row's version after the change (0: a created row).
    pub(crate) version: u64,
    /// The scope to move.
    pub(crate) scope: Scope,
}

impl Owed {
    /// Every group and scope, once each: what applying all of it moves.
    pub(crate) fn all_groups(&self) -> Vec<Scope> {
        let mut all = self.groups.clone();
        for row in &self.scoped {
            if !all.contains(&row.scope) {
                all.push(row.scope.clone());
            }
        }
        all
    }
}

impl CacheService {
    /// Applies `invalidations` (concurrently). Call it after the write's transaction
    /// committed. Every invalidation is attempted; the first error is returned so the
    /// caller can retry or record what it still owes.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService, Cacheable, Invalidation, Namespace};
    ///
    /// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// struct Note {
    ///     version: u64,
    /// }
    /// impl Cacheable for Note {
    ///     fn version(&self) -> u64 {
    ///         self.version
    ///     }
    /// }
    ///
    /// const NOTE: Namespace = Namespace::new("note");
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// let key = cache.key(NOTE, 1);
    /// let note = || async { Ok::<_, std::io::Error>(Some(Note { version: 1 })) };
    /// cache.get_or_load(&key, note).await?;
    ///
    /// // Note 1 was deleted at version 1: it owes version 2.
    /// cache.invalidate(&[Invalidation::at_version(key.clone(), 2)]).await?;
    /// let gone = || async { Ok::<Option<Note>, std::io::Error>(None) };
    /// assert_eq!(cache.get_or_load(&key, gone).await?, None, "the loader ran again");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn invalidate(&self, invalidations: &[Invalidation]) -> Result<()> {
        let fence_ttl = self.inner.config.fence_ttl;
        let results = join_all(
            invalidations
                .iter()
                .map(|inv| self.inner.backend.invalidate(inv, fence_ttl)),
        )
        .await;
        let mut first_error = None;
        for (inv, result) in invalidations.iter().zip(results) {
            // Retired whatever the outcome: a load that began before the write must not
            // be joined by readers that start after it.
            self.inner.flights.retire(inv.key.as_str());
            count_invalidation(inv.key.namespace().name(), result.is_ok());
            if let Err(error) = result {
                self.trip(inv.key.as_str());
                tracing::warn!(key = %inv.key, %error, "cache invalidation failed");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Invalidates every member of `group` in O(1) by moving it to a new generation:
    /// of a [`Group`](crate::Group), the members read as the whole group's; of one
    /// [`Scope`], that scope's members only (the group's other scopes and the whole
    /// group's members stay).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService, Cacheable, Group};
    ///
    /// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// struct Page(String);
    /// impl Cacheable for Page {
    ///     fn version(&self) -> u64 {
    ///         0 // a member of a group: moved on by its generation
    ///     }
    /// }
    ///
    /// const NOTE_LIST: Group = Group::new("note_list");
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// let page = |body: &str| {
    ///     let page = Page(body.to_owned());
    ///     async move { Ok::<_, std::io::Error>(Some(page)) }
    /// };
    /// cache.get_or_load_in(NOTE_LIST, "p1", || page("old")).await?;
    /// cache.get_or_load_in(NOTE_LIST.scope("work"), "p1", || page("old work")).await?;
    ///
    /// cache.invalidate_group(NOTE_LIST.scope("work")).await?;
    /// let work = cache.get_or_load_in(NOTE_LIST.scope("work"), "p1", || page("new work"));
    /// assert_eq!(work.await?, Some(Page("new work".into())), "the scope's pages were reloaded");
    /// let all = cache.get_or_load_in(NOTE_LIST, "p1", || page("new"));
    /// assert_eq!(all.await?, Some(Page("old".into())), "the whole group's were not");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn invalidate_group(&self, group: impl Into<Scope>) -> Result<()> {
        // A write that moves one group and stales no item.
        self.invalidate_scopes(&[], &[group.into()]).await
    }

    /// Invalidates what one committed write made stale: first the `groups` (whole groups
    /// or [`Scope`]s of them), then the `items`, in one round trip where the backend can
    /// (one script on a standalone Redis). The order matters to
    /// [`replay_write`](Self::replay_write): an item's fence is only ever set after its
    /// groups moved on.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use cache_service::{CacheConfig, CacheService, Group, Invalidation, Namespace, Scope};
    ///
    /// const NOTE: Namespace = Namespace::new("note");
    /// const NOTE_LIST: Group = Group::new("note_list");
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// // Note 7 moved from folder "home" to "work" and is at version 4 now: its entry, the
    /// // whole list, and the lists of both folders.
    /// let item = Invalidation::at_version(cache.key(NOTE, 7), 4);
    /// cache.invalidate_write(&[item.clone()], &[NOTE_LIST]).await?;
    /// let lists: [Scope; 3] = [NOTE_LIST.into(), NOTE_LIST.scope("home"), NOTE_LIST.scope("work")];
    /// cache.invalidate_write(&[item], &lists).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn invalidate_write<G>(&self, items: &[Invalidation], groups: &[G]) -> Result<()>
    where
        G: Clone + Into<Scope>,
    {
        let groups: Vec<Scope> = groups.iter().cloned().map(Into::into).collect();
        self.invalidate_scopes(items, &groups).await
    }

    /// [`invalidate_write`](Self::invalidate_write) over groups and scopes.
    pub(crate) async fn invalidate_scopes(
        &self,
        items: &[Invalidation],
        groups: &[Scope],
    ) -> Result<()> {
        let prefix = self.prefix();
        let generation_keys: Vec<String> = groups
            .iter()
            .map(|group| generation_key(&prefix, group))
            .collect();
        let result = self
            .inner
            .backend
            .invalidate_write(
                WriteInvalidation {
                    items,
                    generation_keys: &generation_keys,
                },
                self.inner.config.fence_ttl,
            )
            .await;
        for inv in items {
            // As in `invalidate`: retired whatever the outcome.
            self.inner.flights.retire(inv.key.as_str());
        }
        let namespaces = groups
            .iter()
            .map(|group| group.group().namespace().name())
            .chain(items.iter().map(|inv| inv.key.namespace().name()));
        for namespace in namespaces {
            count_invalidation(namespace, result.is_ok());
        }
        if let Err(error) = &result {
            // Which step failed is not known: every shard the write touches waits for
            // the replay.
            for key in items.iter().map(|inv| inv.key.as_str()) {
                self.trip(key);
            }
            for key in &generation_keys {
                self.trip(key);
            }
            tracing::warn!(%error, "cache invalidation of a write failed");
        }
        result
    }

    /// Applies invalidations owed by writes that may already have been invalidated inline
    /// (an outbox relay's replay). Idempotent, and cheap when they were: an item whose
    /// fence is already at or above its version was applied (the fence was set by the
    /// same script that removed every older value, and refuses older fills since), so
    /// it is skipped; the groups only move on if some item was not applied yet, so a
    /// replay costs no extra loads. Unversioned items always count as not applied.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// use cache_service::{CacheConfig, CacheService, Cacheable, Group, Invalidation, Namespace};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Page(Vec<i64>);
    /// impl Cacheable for Page {
    ///     fn version(&self) -> u64 {
    ///         0
    ///     }
    /// }
    ///
    /// const NOTE: Namespace = Namespace::new("note");
    /// const NOTE_LIST: Group = Group::new("note_list");
    /// let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// let owed = [Invalidation::at_version(cache.key(NOTE, 1), 2)];
    /// cache.invalidate_write(&owed, &[NOTE_LIST]).await?; // inline, after the commit
    ///
    /// let loads = AtomicU32::new(0);
    /// let page = || async {
    ///     loads.fetch_add(1, Ordering::Relaxed);
    ///     Ok::<_, std::io::Error>(Some(Page(vec![1])))
    /// };
    /// cache.get_or_load_in(NOTE_LIST, "p1", page).await?;
    /// // The relay replays the same write: already applied, so the page stays cached.
    /// cache.replay_write(&owed, &[NOTE_LIST]).await?;
    /// cache.get_or_load_in(NOTE_LIST, "p1", page).await?;
    /// assert_eq!(loads.load(Ordering::Relaxed), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn replay_write<G>(&self, items: &[Invalidation], groups: &[G]) -> Result<()>
    where
        G: Clone + Into<Scope>,
    {
        let owed = Owed {
            items: items.to_vec(),
            groups: groups.iter().cloned().map(Into::into).collect(),
            scoped: Vec::new(),
        };
        self.replay(&owed).await
    }

    /// [`replay_write`](Self::replay_write) of rows that also touched scopes. A fence
    /// proves that the write at its version was applied, and with it its scopes: the
    /// scopes of every write are moved by the same call that fences its row. Only a
    /// fence at exactly the row's version proves it for this row, though: a later write
    /// of the same row moved its own scopes, not necessarily this one's (a row that
    /// moved from scope 'a' to 'b', then changed in 'b'). So a row whose entity was
    /// fenced beyond it moves its scopes again (the whole groups need not: that later
    /// write moved them after this one committed), and a replay costs extra loads only
    /// of those scopes, only when a row was written again before the relay's pass.
    pub(crate) async fn replay(&self, owed: &Owed) -> Result<()> {
        let fences = join_all(
            owed.items
                .iter()
                .map(|inv| self.inner.backend.fence(&inv.key)),
        )
        .await;
        let mut pending = Vec::new();
        let mut fence_of: HashMap<&str, Option<u64>> = HashMap::new();
        for (inv, fence) in owed.items.iter().zip(fences) {
            let fence = fence.inspect_err(|_| self.trip(inv.key.as_str()))?;
            fence_of.insert(inv.key.as_str(), fence);
            let applied =
                matches!((inv.version, fence), (Some(version), Some(fence)) if fence >= version);
            if !applied {
                pending.push(inv.clone());
            }
        }
        let mut scopes: Vec<Scope> = Vec::new();
        for row in &owed.scoped {
            let fence = fence_of.get(row.key.as_str()).copied().flatten();
            let applied = row.version > 0 && fence == Some(row.version);
            if !applied && !scopes.contains(&row.scope) {
                scopes.push(row.scope.clone());
            }
        }
        if pending.is_empty() && scopes.is_empty() {
            return Ok(());
        }
        // With every item applied, each row left here was fenced beyond its version: a
        // later write moved the whole groups after it.
        let mut groups = if pending.is_empty() {
            Vec::new()
        } else {
            owed.groups.clone()
        };
        for scope in scopes {
            if !groups.contains(&scope) {
                groups.push(scope);
            }
        }
        self.invalidate_scopes(&pending, &groups).await
    }
}

/// Counts one invalidation of an entry or a group of `namespace`, applied or failed.
fn count_invalidation(namespace: &'static str, applied: bool) {
    if applied {
        metrics::counter!("cache_invalidations_total", "namespace" => namespace).increment(1);
    } else {
        metrics::counter!("cache_invalidation_errors_total", "namespace" => namespace).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheConfig;
    use crate::key::{Group, Namespace};

    const ROW: Namespace = Namespace::new("row");
    const LIST: Group = Group::new("list");

    /// The generations of the whole group and of scopes `a` and `b`.
    async fn generations(cache: &CacheService) -> [u64; 3] {
        let scopes = [LIST.into(), LIST.scope("a"), LIST.scope("b")];
        let mut out = [0; 3];
        for (slot, scope) in out.iter_mut().zip(scopes) {
            let key = cache.generation_key(scope);
            *slot = cache.backend().generation(&key).await.expect("generation");
        }
        out
    }

    fn scoped(cache: &CacheService, version: u64, value: &str) -> ScopedOwed {
        ScopedOwed {
            key: cache.key(ROW, 1),
            version,
            scope: LIST.scope(value),
        }
    }

    fn cache() -> CacheService {
        CacheService::in_memory(CacheConfig::with_prefix("t"), 1_000).expect("cache")
    }

    #[tokio::test]
    async fn a_replay_of_rows_applied_at_their_own_versions_moves_nothing() {
        let cache = cache();
        let item = Invalidation::at_version(cache.key(ROW, 1), 3);
        // Applied inline: row 1 moved from 'a' to 'b' at version 3.
        let inline = [LIST.into(), LIST.scope("a"), LIST.scope("b")];
        cache
            .invalidate_scopes(std::slice::from_ref(&item), &inline)
            .await
            .expect("inline");
        let before = generations(&cache).await;
        let owed = Owed {
            items: vec![item],
            groups: vec![LIST.into()],
            scoped: vec![scoped(&cache, 3, "a"), scoped(&cache, 3, "b")],
        };
        cache.replay(&owed).await.expect("replay");
        assert_eq!(generations(&cache).await, before);
    }

    /// Row 1 moved from 'a' to 'b' at version 3, and its invalidation was lost; then it
    /// changed again in 'b' at version 4, applied inline (its writer named 'b' only). The
    /// fence at 4 proves version 4 applied, not version 3: 'a' still shows the row.
    #[tokio::test]
    async fn a_replay_moves_the_scopes_of_a_row_fenced_beyond_its_version() {
        let cache = cache();
        let later = Invalidation::at_version(cache.key(ROW, 1), 4);
        cache
            .invalidate_scopes(
                std::slice::from_ref(&later),
                &[LIST.into(), LIST.scope("b")],
            )
            .await
            .expect("inline");
        let [whole, a, b] = generations(&cache).await;
        let owed = Owed {
            items: vec![later],
            groups: vec![LIST.into()],
            scoped: vec![
                scoped(&cache, 3, "a"),
                scoped(&cache, 3, "b"),
                scoped(&cache, 4, "b"),
            ],
        };
        cache.replay(&owed).await.expect("replay");
        let after = generations(&cache).await;
        assert_eq!(after[0], whole, "the later write moved the whole group");
        assert!(after[1] > a, "'a' moved");
        assert!(after[2] > b, "'b' moved (row 3 touched it)");
    }

    #[tokio::test]
    async fn a_replay_of_a_row_not_applied_moves_the_groups_and_its_scopes() {
        let cache = cache();
        let [whole, a, b] = generations(&cache).await;
        let owed = Owed {
            items: vec![Invalidation::at_version(cache.key(ROW, 1), 3)],
            groups: vec![LIST.into()],
            scoped: vec![scoped(&cache, 3, "a")],
        };
        cache.replay(&owed).await.expect("replay");
        let after = generations(&cache).await;
        assert!(
            after[0] > whole && after[1] > a,
            "the whole group and 'a' moved"
        );
        assert_eq!(after[2], b, "'b' was not touched");
        assert_eq!(
            cache
                .backend()
                .fence(&cache.key(ROW, 1))
                .await
                .expect("fence"),
            Some(3)
        );
    }
}
