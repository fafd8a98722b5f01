//! `CacheService` over each backend: what a caller sees.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use cache_service::{CacheService, Group, Invalidation, LeaseToken, Lookup, codec};

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
    let db = Db::with(Widget::new(1, 1, "old"));
    let cache = env.service();
    let key = cache.key(WIDGET, 1);
    assert_eq!(
        read(&cache, &key, &db).await,
        Some(Widget::new(1, 1, "old"))
    );

    let new = db.write("new");
    cache
        .invalidate(&[Invalidation::remove(key.clone())])
        .await
        .expect("invalidate");

    assert_eq!(read(&cache, &key, &db).await, Some(new.clone()));
    assert_eq!(read(&cache, &key, &db).await, Some(new));
    assert_eq!(db.loads(), 2, "one reload, then hits");
}

pub async fn a_read_after_a_versioned_invalidation_loads_the_new_value(env: &Env) {
    let db = Db::with(Widget::new(1, 1, "old"));
    let cache = env.service();
    let key = cache.key(WIDGET, 1);
    assert_eq!(
        read(&cache, &key, &db).await,
        Some(Widget::new(1, 1, "old"))
    );

    let new = db.write("new");
    cache
        .invalidate(&[Invalidation::at_version(key.clone(), new.version)])
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
                .get_or_lease(&key, token, cache.config().lease_ttl)
                .await
                .expect("lease"),
            Lookup::Leased
        );
        backend
            .fill(&key, token, &bytes, cache.config().ttl)
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
}
