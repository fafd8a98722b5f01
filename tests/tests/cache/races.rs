//! Deterministic interleavings of readers, writers and invalidations.
//!
//! A loader that must be caught mid-load holds a [`PausePoint`](crate::support::PausePoint):
//! it reads the database, tells the test, and waits until the test lets it go on. In
//! between, the test commits a write and invalidates, so every race below happens on
//! every run, in the order written, with no sleeps.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_service::{CacheKey, CacheService, Group, Invalidation};
use fred::prelude::KeysInterface;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::support::{
    Db, Env, Page, PauseControl, WIDGET, Widget, pause_point, read, test_config, within_10s,
};

const PAGES: Group = Group::new("widget_page");

on_both_backends!(realtime:
    a_naive_cache_aside_caches_the_old_value_when_an_invalidation_lands_mid_load,
    the_cache_service_stores_nothing_loaded_before_an_invalidation,
    the_cache_service_stores_nothing_loaded_before_a_versioned_invalidation,
    a_read_that_starts_after_an_invalidation_does_not_join_a_load_that_began_before_it,
    a_value_from_a_lagging_replica_is_fenced_even_under_a_lease_taken_after_the_invalidation,
    a_list_page_loaded_before_a_group_invalidation_is_never_served_after_it,
    a_thousand_concurrent_misses_on_one_service_call_the_loader_once,
);

/// The textbook cache-aside (GET; on a miss load and SET; after a write DEL), over a
/// `HashMap` or over Redis with a plain client: what `CacheService` replaces.
#[derive(Debug)]
enum NaiveCache {
    Map(Mutex<HashMap<String, Widget>>),
    Redis(fred::prelude::Client),
}

impl NaiveCache {
    fn for_env(env: &Env) -> Self {
        match &env.redis {
            Some(redis) => Self::Redis(redis.client.clone()),
            None => Self::Map(Mutex::default()),
        }
    }

    async fn get(&self, key: &str) -> Option<Widget> {
        match self {
            Self::Map(map) => map.lock().expect("not poisoned").get(key).cloned(),
            Self::Redis(client) => {
                let json: Option<String> = client.get(key).await.expect("GET");
                json.map(|json| serde_json::from_str(&json).expect("a widget"))
            }
        }
    }

    async fn set(&self, key: &str, widget: &Widget) {
        match self {
            Self::Map(map) => {
                map.lock()
                    .expect("not poisoned")
                    .insert(key.to_owned(), widget.clone());
            }
            Self::Redis(client) => {
                let json = serde_json::to_string(widget).expect("serializes");
                let _: () = client.set(key, json, None, None, false).await.expect("SET");
            }
        }
    }

    async fn del(&self, key: &str) {
        match self {
            Self::Map(map) => {
                map.lock().expect("not poisoned").remove(key);
            }
            Self::Redis(client) => {
                let _: i64 = client.del(key).await.expect("DEL");
            }
        }
    }
}

/// Demonstrates the race the rest of this module proves `CacheService` immune to: if
/// this test ever fails, the pause points no longer produce the interleaving.
pub async fn a_naive_cache_aside_caches_the_old_value_when_an_invalidation_lands_mid_load(
    env: &Env,
) {
    let naive = Arc::new(NaiveCache::for_env(env));
    let db = Db::with(Widget::new(1, 1, "old"));
    let key = format!("{}:naive:1", env.prefix);
    let (pause, mut loader) = pause_point();
    let reader = tokio::spawn({
        let (naive, db, key) = (Arc::clone(&naive), Arc::clone(&db), key.clone());
        async move {
            if let Some(hit) = naive.get(&key).await {
                return Some(hit);
            }
            let loaded = db.load();
            pause.pause().await;
            if let Some(widget) = &loaded {
                naive.set(&key, widget).await;
            }
            loaded
        }
    });

    loader.reached().await; // the reader has read version 1
    let new = db.write("new");
    naive.del(&key).await; // the writer invalidates after its commit
    loader.resume();
    within_10s(reader).await.expect("the reader finishes");

    assert_eq!(
        naive.get(&key).await,
        Some(Widget::new(1, 1, "old")),
        "the naive cache holds the value from before the write"
    );
    assert_eq!(db.peek(), Some(new), "while the database moved on");
}

/// A reader of `key` whose loader reads `db`, then stops at a pause point until the
/// returned control resumes it.
fn paused_reader(
    cache: &CacheService,
    key: &CacheKey,
    db: &Arc<Db>,
) -> (JoinHandle<Option<Widget>>, PauseControl) {
    let (pause, loader) = pause_point();
    let reader = tokio::spawn({
        let (cache, key, db) = (cache.clone(), key.clone(), Arc::clone(db));
        async move {
            let Ok(widget) = cache
                .get_or_load(&key, move || async move {
                    let loaded = db.load();
                    pause.pause().await;
                    Ok::<_, Infallible>(loaded)
                })
                .await;
            widget
        }
    });
    (reader, loader)
}

/// Reader A misses and loads version 1; a write commits and is invalidated while A is
/// mid-load; A then tries to store version 1.
async fn invalidation_lands_mid_load(
    env: &Env,
    invalidation: fn(&CacheService, &Widget) -> Invalidation,
) {
    let cache = env.service();
    let db = Db::with(Widget::new(1, 1, "old"));
    let key = cache.key(WIDGET, 1);
    let (reader, mut loader) = paused_reader(&cache, &key, &db);

    loader.reached().await;
    let new = db.write("new");
    cache
        .invalidate(&[invalidation(&cache, &new)])
        .await
        .expect("invalidate");
    loader.resume();

    assert_eq!(
        within_10s(reader).await.expect("the reader finishes"),
        Some(Widget::new(1, 1, "old")),
        "a read that began before the write may return what it loaded"
    );
    assert_eq!(
        cache.backend().get(&key).await.expect("get"),
        None,
        "but could not store it"
    );
    assert_eq!(read(&cache, &key, &db).await, Some(new.clone()));
    assert_eq!(db.loads(), 2, "the next read loaded again");
    assert_eq!(read(&cache, &key, &db).await, Some(new));
    assert_eq!(db.loads(), 2, "and stored the new value");
}

pub async fn the_cache_service_stores_nothing_loaded_before_an_invalidation(env: &Env) {
    invalidation_lands_mid_load(env, |cache, new| {
        Invalidation::remove(cache.key(WIDGET, new.id))
    })
    .await;
}

pub async fn the_cache_service_stores_nothing_loaded_before_a_versioned_invalidation(env: &Env) {
    invalidation_lands_mid_load(env, |cache, new| {
        Invalidation::at_version(cache.key(WIDGET, new.id), new.version)
    })
    .await;
}

pub async fn a_read_that_starts_after_an_invalidation_does_not_join_a_load_that_began_before_it(
    env: &Env,
) {
    // A short lease wait: after a versioned invalidation the old load still holds its
    // lease, so the new reader waits that long, then loads without storing.
    let cache = env.service_with(|c| c.lease_wait = Duration::from_millis(20));
    for (id, versioned) in [(1, false), (2, true)] {
        let db = Db::with(Widget::new(id, 1, "old"));
        let key = cache.key(WIDGET, id);
        let (early_reader, mut loader) = paused_reader(&cache, &key, &db);
        loader.reached().await;
        let new = db.write("new");
        let invalidation = if versioned {
            Invalidation::at_version(key.clone(), new.version)
        } else {
            Invalidation::remove(key.clone())
        };
        cache.invalidate(&[invalidation]).await.expect("invalidate");

        // The early load is still paused: without retiring its flight, this read would
        // wait for it and get version 1.
        assert_eq!(
            within_10s(read(&cache, &key, &db)).await,
            Some(new.clone()),
            "versioned: {versioned}"
        );

        loader.resume();
        within_10s(early_reader)
            .await
            .expect("the early reader finishes");
        assert_eq!(
            read(&cache, &key, &db).await,
            Some(new),
            "versioned: {versioned}: the early load stored nothing"
        );
    }
}

pub async fn a_value_from_a_lagging_replica_is_fenced_even_under_a_lease_taken_after_the_invalidation(
    env: &Env,
) {
    let cache = env.service();
    let key = cache.key(WIDGET, 1);
    let primary = Db::with(Widget::new(1, 1, "old"));
    // A replica that has not applied the write yet.
    let lagging_replica = Db::with(Widget::new(1, 1, "old"));
    assert_eq!(
        read(&cache, &key, &primary).await,
        Some(Widget::new(1, 1, "old"))
    );

    let new = primary.write("new");
    cache
        .invalidate(&[Invalidation::at_version(key.clone(), new.version)])
        .await
        .expect("invalidate");
    // This reader takes its lease now, after the invalidation, so the lease alone
    // cannot refuse its fill: only the fence at version 2 can.
    assert_eq!(
        read(&cache, &key, &lagging_replica).await,
        Some(Widget::new(1, 1, "old"))
    );

    assert_eq!(
        cache.backend().get(&key).await.expect("get"),
        None,
        "version 1 was fenced, not stored"
    );
    assert_eq!(read(&cache, &key, &primary).await, Some(new.clone()));
    assert_eq!(
        read(&cache, &key, &lagging_replica).await,
        Some(new),
        "the current version was stored and is served"
    );
    assert_eq!(lagging_replica.loads(), 1);
}

pub async fn a_list_page_loaded_before_a_group_invalidation_is_never_served_after_it(env: &Env) {
    let cache = env.service();
    let list = Arc::new(Mutex::new(vec!["a".to_owned()]));
    let loads = Arc::new(AtomicUsize::new(0));
    let snapshot = {
        let (list, loads) = (Arc::clone(&list), Arc::clone(&loads));
        move || {
            loads.fetch_add(1, Ordering::SeqCst);
            Page {
                names: list.lock().expect("not poisoned").clone(),
            }
        }
    };
    let read_page = |page: u32| {
        let (cache, snapshot) = (cache.clone(), snapshot.clone());
        async move {
            let Ok(page) = cache
                .get_or_load_in(PAGES, page, || async move {
                    Ok::<_, Infallible>(Some(snapshot()))
                })
                .await;
            page.expect("a page").names
        }
    };
    // Page 1 is cached before the write; page 2 is being loaded during it.
    assert_eq!(read_page(1).await, ["a"]);
    let (pause, mut loader) = pause_point();
    let in_flight = tokio::spawn({
        let (cache, snapshot) = (cache.clone(), snapshot.clone());
        async move {
            let Ok(page) = cache
                .get_or_load_in(PAGES, 2, || async move {
                    let page = snapshot();
                    pause.pause().await;
                    Ok::<_, Infallible>(Some(page))
                })
                .await;
            page.expect("a page").names
        }
    });
    loader.reached().await;

    list.lock().expect("not poisoned").push("b".to_owned());
    cache
        .invalidate_group(PAGES)
        .await
        .expect("invalidate_group");

    assert_eq!(
        read_page(1).await,
        ["a", "b"],
        "the cached page is not served"
    );
    assert_eq!(read_page(2).await, ["a", "b"], "nor is the page in flight");
    loader.resume();
    assert_eq!(within_10s(in_flight).await.expect("finishes"), ["a"]);
    let loads_before = loads.load(Ordering::SeqCst);
    assert_eq!(read_page(1).await, ["a", "b"]);
    assert_eq!(
        read_page(2).await,
        ["a", "b"],
        "the late fill of the old page did not replace the new one"
    );
    assert_eq!(
        loads.load(Ordering::SeqCst),
        loads_before,
        "both pages are hits now"
    );
}

/// `readers` concurrent reads of one cold key, spread round-robin over `services`; the
/// loader holds until every reader has started. Returns the number of loads.
async fn stampede(services: &[CacheService], readers: usize) -> usize {
    let key = services[0].key(WIDGET, 1);
    let loads = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = watch::channel(0usize);
    let mut tasks = JoinSet::new();
    for i in 0..readers {
        let cache = services[i % services.len()].clone();
        let (key, loads, started_tx, mut started_rx) = (
            key.clone(),
            Arc::clone(&loads),
            started_tx.clone(),
            started_rx.clone(),
        );
        tasks.spawn(async move {
            started_tx.send_modify(|n| *n += 1);
            let Ok(widget) = cache
                .get_or_load(&key, || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    let everyone = started_rx.wait_for(|n| *n == readers);
                    let _ = tokio::time::timeout(Duration::from_secs(5), everyone).await;
                    Ok::<_, Infallible>(Some(Widget::new(1, 1, "one")))
                })
                .await;
            widget
        });
    }
    while let Some(result) = within_10s(tasks.join_next()).await {
        assert_eq!(
            result.expect("a reader finishes"),
            Some(Widget::new(1, 1, "one"))
        );
    }
    loads.load(Ordering::SeqCst)
}

pub async fn a_thousand_concurrent_misses_on_one_service_call_the_loader_once(env: &Env) {
    // No lease wait: a reader that found the lease busy would load at once, so only
    // single-flight can keep the count at one.
    let cache = env.service_with(|c| c.lease_wait = Duration::ZERO);

    assert_eq!(stampede(&[cache], 1000).await, 1);
}

mod redis_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_services_sharing_one_redis_call_the_loader_once_for_a_cold_key() {
        let Some(env) =
            Env::redis("three_services_sharing_one_redis_call_the_loader_once_for_a_cold_key")
                .await
        else {
            return;
        };
        // Long enough that the other services wait for the first one's fill instead of
        // loading themselves (the design allows up to one load per service).
        let mut config = test_config(&env.prefix);
        config.lease_wait = Duration::from_secs(2);
        let mut services = Vec::new();
        for _ in 0..3 {
            let backend = env.another_backend().await;
            services.push(CacheService::new(backend, config.clone()).expect("a valid config"));
        }

        let loads = stampede(&services, 1000).await;

        assert!(loads <= 3, "at most one load per service, got {loads}");
        assert_eq!(
            loads, 1,
            "the other services waited for the lease holder's fill"
        );
        env.cleanup().await;
    }
}
