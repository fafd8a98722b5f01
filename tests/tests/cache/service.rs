//! `CacheService` over each backend: what a caller sees.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use cache_service::{
    CacheError, CacheService, CachedJson, Group, Invalidation, Lease, LeaseToken, Lookup, codec,
};

use crate::support::{Db, Env, Page, WIDGET, Widget, read};

const PAGES: Group = Group::new("widget_page");
const OTHER_PAGES: Group = Group::new("gadget_page");

on_both_backends!(realtime:
    a_second_read_is_served_from_the_cache_without_calling_the_loader,
    a_missing_row_is_cached_as_absent,
    a_read_after_an_invalidation_loads_the_new_value,
    a_read_after_a_versioned_invalidation_loads_the_new_value,
    a_repeated_versioned_invalidation_costs_no_extra_load,
    invalidating_a_group_makes_every_member_reload,
    services_with_different_prefixes_do_not_share_entries,
    an_entry_that_cannot_be_decoded_is_replaced_on_read,
    a_json_read_hands_back_the_stored_json_and_shares_entries_with_typed_reads,
    a_json_read_of_a_missing_row_is_none_and_cached,
    a_json_read_of_a_group_member_reloads_after_the_group_moved_on,
);

/// A loader of list pages that counts its calls; a page reads "{edition} page {n}", so a
/// test can tell which load produced it.
#[derive(Debug, Default)]
struct Pages {
    loads: AtomicUsize,
}

impl Pages {
    async fn read(&self, cache: &CacheService, group: Group, page: u32, edition: &str) -> Page {
        let Ok(page) = cache
            .get_or_load_in(group, page, || async {
                self.loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>(Some(Page {
                    names: vec![format!("{edition} page {page}")],
                }))
            })
            .await;
        page.expect("the loader always returns a page")
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

pub async fn a_second_read_is_served_from_the_cache_without_calling_the_loader(env: &Env) {
    let db = Db::with(Widget::new(1, 1, "one"));
    let cache = env.service();
    let key = cache.key(WIDGET, 1);

    let first = read(&cache, &key, &db).await;
    let second = read(&cache, &key, &db).await;

    assert_eq!(first, Some(Widget::new(1, 1, "one")));
    assert_eq!(second, first);
    assert_eq!(db.loads(), 1, "the second read was a hit");
}

pub async fn a_missing_row_is_cached_as_absent(env: &Env) {
    let db = Db::empty();
    let cache = env.service();
    let key = cache.key(WIDGET, 404);

    assert_eq!(read(&cache, &key, &db).await, None);
    assert_eq!(read(&cache, &key, &db).await, None);

    assert_eq!(db.loads(), 1, "'no such row' was cached too");
}

pub async fn a_read_after_an_invalidation_loads_the_new_value(env: &Env) {
    read_after_invalidation_loads_the_new_value(env, |key, _| Invalidation::remove(key)).await;
}

pub async fn a_read_after_a_versioned_invalidation_loads_the_new_value(env: &Env) {
    read_after_invalidation_loads_the_new_value(env, Invalidation::at_version).await;
}

/// A cached widget is changed, then invalidated by `invalidation(key, new version)`:
/// the next read loads the new value once, the one after hits.
async fn read_after_invalidation_loads_the_new_value(
    env: &Env,
    invalidation: impl Fn(cache_service::CacheKey, u64) -> Invalidation,
) {
    let db = Db::with(Widget::new(1, 1, "old"));
    let cache = env.service();
    let key = cache.key(WIDGET, 1);
    assert_eq!(
        read(&cache, &key, &db).await,
        Some(Widget::new(1, 1, "old"))
    );

    let new = db.write("new");
    cache
        .invalidate(&[invalidation(key.clone(), new.version)])
        .await
        .expect("invalidate");

    assert_eq!(read(&cache, &key, &db).await, Some(new.clone()));
    assert_eq!(read(&cache, &key, &db).await, Some(new));
    assert_eq!(db.loads(), 2, "one reload, then hits");
}

pub async fn a_repeated_versioned_invalidation_costs_no_extra_load(env: &Env) {
    let db = Db::with(Widget::new(1, 1, "old"));
    let cache = env.service();
    let key = cache.key(WIDGET, 1);
    read(&cache, &key, &db).await;
    let new = db.write("new");
    let invalidation = Invalidation::at_version(key.clone(), new.version);
    cache
        .invalidate(std::slice::from_ref(&invalidation))
        .await
        .expect("invalidate");
    assert_eq!(read(&cache, &key, &db).await, Some(new.clone()));

    // Delivered again (a retry, an outbox relay replaying it).
    cache.invalidate(&[invalidation]).await.expect("invalidate");

    assert_eq!(read(&cache, &key, &db).await, Some(new));
    assert_eq!(db.loads(), 2, "the cached value already had the version");
}

pub async fn invalidating_a_group_makes_every_member_reload(env: &Env) {
    let cache = env.service();
    let pages = Pages::default();
    let other_pages = Pages::default();
    for page in 1..=3 {
        pages.read(&cache, PAGES, page, "first").await;
    }
    other_pages.read(&cache, OTHER_PAGES, 1, "first").await;
    for page in 1..=3 {
        pages.read(&cache, PAGES, page, "second").await;
    }
    assert_eq!(pages.loads(), 3, "members are cached");

    cache
        .invalidate_group(PAGES)
        .await
        .expect("invalidate_group");

    for page in 1..=3 {
        assert_eq!(
            pages.read(&cache, PAGES, page, "third").await.names,
            vec![format!("third page {page}")],
            "page {page} was reloaded"
        );
    }
    assert_eq!(pages.loads(), 6, "every member reloaded once");
    assert_eq!(
        other_pages
            .read(&cache, OTHER_PAGES, 1, "third")
            .await
            .names,
        vec!["first page 1".to_owned()],
        "another group keeps its entries"
    );
    assert_eq!(other_pages.loads(), 1);
}

pub async fn services_with_different_prefixes_do_not_share_entries(env: &Env) {
    let db = Db::with(Widget::new(1, 1, "one"));
    let tenant_a = env.service_with(|c| c.prefix = format!("{}_a", env.prefix));
    let tenant_b = env.service_with(|c| c.prefix = format!("{}_b", env.prefix));
    let (key_a, key_b) = (tenant_a.key(WIDGET, 1), tenant_b.key(WIDGET, 1));
    assert_ne!(key_a, key_b);

    read(&tenant_a, &key_a, &db).await;
    read(&tenant_b, &key_b, &db).await;
    assert_eq!(db.loads(), 2, "b did not see a's entry");

    tenant_b
        .invalidate(&[Invalidation::remove(key_b.clone())])
        .await
        .expect("invalidate");
    read(&tenant_a, &key_a, &db).await;
    assert_eq!(db.loads(), 2, "b's invalidation did not touch a's entry");
}

pub async fn an_entry_that_cannot_be_decoded_is_replaced_on_read(env: &Env) {
    let db = Db::with(Widget::new(1, 1, "one"));
    let cache = env.service();
    let mut unknown_format = codec::encode(1, &Widget::new(1, 1, "future")).expect("encodes");
    unknown_format[0] = 2;
    let other_schema = codec::encode(1, &serde_json::json!({"renamed": true})).expect("encodes");
    for (id, bytes) in [(1, unknown_format), (2, other_schema)] {
        let key = cache.key(WIDGET, id);
        let token = LeaseToken::random();
        let backend = cache.backend();
        assert_eq!(
            backend
                .get_or_lease(Lease::new(&key, token), cache.config().lease_ttl)
                .await
                .expect("lease"),
            Lookup::Leased
        );
        backend
            .fill(Lease::new(&key, token), &bytes, cache.config().ttl)
            .await
            .expect("fill");
    }

    for id in [1, 2] {
        let key = cache.key(WIDGET, id);
        let before = db.loads();
        assert_eq!(
            read(&cache, &key, &db).await,
            Some(Widget::new(1, 1, "one")),
            "key {id}"
        );
        assert_eq!(
            db.loads(),
            before + 1,
            "key {id}: undecodable bytes are a miss"
        );
        read(&cache, &key, &db).await;
        assert_eq!(db.loads(), before + 1, "key {id}: and were replaced");
    }
}

/// `cache.get_or_load_json(key)` with a loader reading `db`.
async fn read_json(
    cache: &CacheService,
    key: &cache_service::CacheKey,
    db: &Db,
) -> Option<CachedJson> {
    cache
        .get_or_load_json(key, || async { Ok::<_, CacheError>(db.load()) })
        .await
        .expect("the loader does not fail")
}

pub async fn a_json_read_hands_back_the_stored_json_and_shares_entries_with_typed_reads(env: &Env) {
    let widget = Widget::new(1, 3, "three");
    let db = Db::with(widget.clone());
    let cache = env.service();
    let key = cache.key(WIDGET, 1);
    let expected = CachedJson {
        version: 3,
        json: serde_json::to_vec(&widget).expect("encodes").into(),
    };

    assert_eq!(
        read_json(&cache, &key, &db).await,
        Some(expected.clone()),
        "miss"
    );
    assert_eq!(
        read_json(&cache, &key, &db).await,
        Some(expected.clone()),
        "hit"
    );
    assert_eq!(read(&cache, &key, &db).await, Some(widget), "typed hit");
    assert_eq!(db.loads(), 1, "one load served all three");

    let renamed = db.write("four");
    cache
        .invalidate(&[Invalidation::at_version(key.clone(), renamed.version)])
        .await
        .expect("invalidate");
    let read_back = read(&cache, &key, &db).await;
    assert_eq!(read_back, Some(renamed.clone()), "typed miss fills");
    assert_eq!(
        read_json(&cache, &key, &db).await,
        Some(CachedJson {
            version: 4,
            json: serde_json::to_vec(&renamed).expect("encodes").into(),
        }),
        "a JSON hit on the typed fill"
    );
    assert_eq!(db.loads(), 2);
}

pub async fn a_json_read_of_a_missing_row_is_none_and_cached(env: &Env) {
    let db = Db::empty();
    let cache = env.service();
    let key = cache.key(WIDGET, 9);

    assert_eq!(read_json(&cache, &key, &db).await, None);
    assert_eq!(read_json(&cache, &key, &db).await, None);
    assert_eq!(db.loads(), 1, "the absence was cached");
}

pub async fn a_json_read_of_a_group_member_reloads_after_the_group_moved_on(env: &Env) {
    let cache = env.service();
    let loads = AtomicUsize::new(0);
    let read_page = |edition: &'static str| {
        let loads = &loads;
        let cache = &cache;
        async move {
            cache
                .get_or_load_json_in(PAGES, 1, || async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, CacheError>(Some(Page {
                        names: vec![edition.to_owned()],
                    }))
                })
                .await
                .expect("the loader does not fail")
                .expect("the loader always returns a page")
        }
    };

    let first = read_page("first").await;
    assert_eq!(first.json, r#"{"names":["first"]}"#.as_bytes());
    assert_eq!(first.version, 0, "pages are unversioned");
    assert_eq!(read_page("unused").await, first, "a hit");
    cache.invalidate_group(PAGES).await.expect("invalidate");
    assert_eq!(
        read_page("second").await.json,
        r#"{"names":["second"]}"#.as_bytes()
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

mod redis_only {
    use fred::prelude::{ClientLike, KeysInterface};

    use super::*;

    #[tokio::test]
    async fn entries_are_stored_in_redis_under_the_configured_prefix() {
        let Some(env) = Env::redis("entries_are_stored_in_redis_under_the_configured_prefix").await
        else {
            return;
        };
        let redis = env.redis.as_ref().expect("a Redis env");
        let cache = env.service();
        let db = Db::with(Widget::new(7, 1, "seven"));
        let key = cache.key(WIDGET, 7);

        read(&cache, &key, &db).await;
        Pages::default().read(&cache, PAGES, 1, "first").await;

        let widget_key = format!("{}:widget:{{7}}", env.prefix);
        assert_eq!(key.as_str(), widget_key);
        let exists: i64 = redis.client.exists(&widget_key).await.expect("EXISTS");
        assert_eq!(exists, 1, "{widget_key} is in Redis");
        let generation_key = format!("{}:widget_page:generation", env.prefix);
        let generation: Option<u64> = redis.client.get(&generation_key).await.expect("GET");
        let generation = generation.expect("the group's generation counter is in Redis");
        let page_key = format!("{}:widget_page:{{g{generation}:1}}", env.prefix);
        let exists: i64 = redis.client.exists(&page_key).await.expect("EXISTS");
        assert_eq!(exists, 1, "{page_key} is in Redis");

        if redis.server.is_some() {
            // Our private server: nothing may live outside the prefix. (Never KEYS on a
            // shared server.)
            let keys: Vec<String> = redis
                .client
                .custom(fred::cmd!("KEYS"), vec!["*"])
                .await
                .expect("KEYS");
            assert!(!keys.is_empty());
            for k in keys {
                assert!(
                    k.starts_with(&format!("{}:", env.prefix)),
                    "{k} is outside the prefix"
                );
            }
        }
        env.cleanup().await;
    }

    /// The groups move on before any item is fenced, and a group that cannot move on
    /// stops the write's invalidation there: a replay must never find an item fenced
    /// while its list pages still show the old value.
    #[tokio::test]
    async fn a_write_whose_group_cannot_move_on_fences_no_item() {
        let Some(env) = Env::redis("a_write_whose_group_cannot_move_on_fences_no_item").await
        else {
            return;
        };
        let redis = env.redis.as_ref().expect("a Redis env");
        let cache = env.service();
        let db = Db::with(Widget::new(1, 1, "one"));
        let key = cache.key(WIDGET, 1);
        read(&cache, &key, &db).await;
        // A fault a real server produces on demand: INCR on a value that is no integer.
        let generation_key = format!("{}:widget_page:generation", env.prefix);
        let _: () = redis
            .client
            .set(&generation_key, "not a number", None, None, false)
            .await
            .expect("SET");

        let result = cache
            .invalidate_write(&[Invalidation::at_version(key.clone(), 2)], &[PAGES])
            .await;

        assert!(result.is_err(), "the failed group bump is reported");
        let fence = cache.backend().fence(&key).await.expect("fence");
        assert_eq!(fence, None, "no item was fenced");
        let cached = cache.backend().get(&key).await.expect("GET");
        assert!(cached.is_some(), "and no item was removed");
        env.cleanup().await;
    }
}

/// An application that already has a fred pool hands it over: the cache works on it as
/// on a pool it built itself.
#[tokio::test]
async fn a_backend_over_the_applications_own_fred_pool_caches_and_invalidates() {
    use std::sync::Arc;
    use std::time::Duration;

    use cache_service::RedisBackend;
    use cache_service::fred::prelude::{Builder, ClientLike, Config, ReconnectPolicy};

    let Some((url, _server)) = integration_tests::redis_url_or_skip("byo_pool").await else {
        return;
    };
    let timeout = Duration::from_millis(250);
    let pool = Builder::from_config(Config::from_url(&url).expect("a Redis URL"))
        .with_performance_config(|p| p.default_command_timeout = timeout)
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 200, 2))
        .build_pool(2)
        .expect("a pool");
    pool.init().await.expect("the pool connects");
    let cache = CacheService::new(
        Arc::new(RedisBackend::from_pool(pool, timeout)),
        crate::support::test_config(&integration_tests::unique_prefix("byo_pool")),
    )
    .expect("a cache over it");
    let db = Db::with(Widget::new(1, 1, "first"));
    let key = cache.key(WIDGET, 1);

    assert_eq!(
        read(&cache, &key, &db).await,
        Some(Widget::new(1, 1, "first"))
    );
    assert_eq!(
        read(&cache, &key, &db).await,
        Some(Widget::new(1, 1, "first"))
    );
    assert_eq!(db.loads(), 1, "the second read is a hit");

    let written = db.write("second");
    cache
        .invalidate(&[Invalidation::at_version(key.clone(), written.version)])
        .await
        .expect("invalidate");
    assert_eq!(read(&cache, &key, &db).await, Some(written));
    assert_eq!(db.loads(), 2);
}
