//! [`NearCache`] as a [`CacheBackend`]: reads past the barrier from L1, or from Redis
//! and filled into L1; everything else goes to Redis, and what a write changes leaves L1
//! at once (Redis's pushes would drop it a moment later).

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{FillToken, NearCache};
use crate::backend::{CacheBackend, FillOutcome, Lease, Lookup, WriteInvalidation};
use crate::error::Result;
use crate::key::{CacheKey, Invalidation, MemberKey};

fn count(namespace: &'static str, result: &'static str) {
    metrics::counter!("cache_l1_requests_total", "namespace" => namespace, "result" => result)
        .increment(1);
}

#[async_trait]
impl CacheBackend for NearCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        let shared = &self.shared;
        let namespace = key.namespace().name();
        if let Some(value) = shared.get_past_barrier(key.as_str()).await {
            shared.hits.fetch_add(1, Ordering::Relaxed);
            count(namespace, "hit");
            return Ok(Some(value));
        }
        shared.misses.fetch_add(1, Ordering::Relaxed);
        count(namespace, "miss");
        let token = shared.fill_token(key.as_str());
        let value = self.redis.get(key).await?;
        if let Some(value) = &value {
            shared.fill(key.as_str(), value, token).await;
        }
        Ok(value)
    }

    async fn get_member(
        &self,
        generation_key: &str,
        member: &MemberKey,
    ) -> Result<(u64, Option<Bytes>)> {
        let shared = &self.shared;
        let namespace = member.namespace().name();
        if shared.is_ready()
            && let Some(current) = shared.l1.get(generation_key)
            && let Some(generation) = parse(&current.value)
        {
            let key = member.at(generation);
            if let Some(entry) = shared.l1.get(key.as_str())
                && shared.may_serve().await
                && shared.still_good(generation_key, current).is_some()
                && let Some(entry) = shared.still_good(key.as_str(), entry)
            {
                shared.hits.fetch_add(1, Ordering::Relaxed);
                count(namespace, "hit");
                return Ok((generation, Some(entry)));
            }
        }
        shared.misses.fetch_add(1, Ordering::Relaxed);
        count(namespace, "miss");
        let token = shared.fill_token(generation_key);
        // A member's entry is written once per generation: only a flush makes it wrong.
        let flushes = shared.flushes.load(Ordering::Acquire);
        let (generation, entry) = self.redis.get_member(generation_key, member).await?;
        shared
            .fill(generation_key, generation.to_string().as_bytes(), token)
            .await;
        if let Some(entry) = &entry {
            let key = member.at(generation);
            let token = FillToken {
                flushes,
                stripe: shared.stripe(key.as_str()).load(Ordering::Acquire),
            };
            shared.fill(key.as_str(), entry, token).await;
        }
        Ok((generation, entry))
    }

    async fn get_or_lease(&self, lease: Lease<'_>, lease_ttl: Duration) -> Result<Lookup> {
        self.redis.get_or_lease(lease, lease_ttl).await
    }

    async fn fill(&self, lease: Lease<'_>, entry: &[u8], ttl: Duration) -> Result<FillOutcome> {
        self.redis.fill(lease, entry, ttl).await
    }

    async fn invalidate(&self, invalidation: &Invalidation, fence_ttl: Duration) -> Result<()> {
        let result = self.redis.invalidate(invalidation, fence_ttl).await;
        // Redis's push will say the same; dropping it now saves a barrier's worth.
        self.shared.drop_key(invalidation.key.as_str());
        result
    }

    async fn invalidate_write(
        &self,
        write: WriteInvalidation<'_>,
        fence_ttl: Duration,
    ) -> Result<()> {
        let result = self.redis.invalidate_write(write, fence_ttl).await;
        for key in write.generation_keys {
            self.shared.drop_key(key);
        }
        for item in write.items {
            self.shared.drop_key(item.key.as_str());
        }
        result
    }

    async fn fence(&self, key: &CacheKey) -> Result<Option<u64>> {
        self.redis.fence(key).await
    }

    async fn generation(&self, key: &str) -> Result<u64> {
        self.redis.generation(key).await
    }

    async fn bump_generation(&self, key: &str) -> Result<u64> {
        let result = self.redis.bump_generation(key).await;
        self.shared.drop_key(key);
        result
    }

    async fn ping(&self) -> Result<()> {
        self.redis.ping().await
    }

    async fn identity(&self) -> Result<Option<String>> {
        self.redis.identity().await
    }

    fn reconnects(&self) -> u64 {
        self.redis.reconnects()
    }

    fn refresh_reconnects(&self) -> u64 {
        self.redis.refresh_reconnects()
    }

    async fn reconnected(&self) {
        self.redis.reconnected().await;
    }

    fn shard_count(&self) -> usize {
        self.redis.shard_count()
    }

    fn shard_of(&self, key: &str) -> usize {
        self.redis.shard_of(key)
    }

    async fn ping_shards(&self) -> Vec<bool> {
        self.redis.ping_shards().await
    }

    async fn eviction_policy(&self) -> Result<Option<String>> {
        self.redis.eviction_policy().await
    }

    /// An epoch move: nothing in L1 is used again.
    fn forget_local(&self) {
        self.shared.flush();
    }
}

fn parse(generation: &Bytes) -> Option<u64> {
    std::str::from_utf8(generation).ok()?.parse().ok()
}
