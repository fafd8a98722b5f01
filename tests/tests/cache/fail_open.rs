//! Fail open: with Redis dead or frozen, reads still return the loader's value and
//! invalidations report the failure to their caller. Each test has a private
//! `redis-server` it can kill.

use std::convert::Infallible;

use cache_service::{CacheService, Group, Invalidation, RedisConfig};
use integration_tests::{RedisServer, redis_server_or_skip, unique_prefix};

use crate::support::{Db, Page, WIDGET, Widget, read, test_config, within_10s};

const PAGES: Group = Group::new("widget_page");

/// A private Redis and a `CacheService` connected to it (default Redis settings: 250 ms
/// command timeout).
async fn service_over_private_redis(test_name: &str) -> Option<(RedisServer, CacheService)> {
    let server = redis_server_or_skip(test_name).await?;
    let cache = CacheService::connect_redis(
        &RedisConfig::new(server.url()),
        test_config(&unique_prefix(test_name)),
    )
    .await
    .expect("connects while Redis is up");
    Some((server, cache))
}

async fn read_page(cache: &CacheService, db: &Db) -> Option<Page> {
    let Ok(page) = cache
        .get_or_load_in(PAGES, 1, || async {
            Ok::<_, Infallible>(db.load().map(|w| Page {
                names: vec![w.name],
            }))
        })
        .await;
    page
}

/// Reads of a cached key, a cold key and a group member, and both kinds of invalidation,
/// against a Redis that no longer answers.
async fn assert_fails_open(cache: &CacheService, db: &Db) {
    let (cached, cold) = (cache.key(WIDGET, 1), cache.key(WIDGET, 2));
    let widget = Widget::new(1, 1, "one");

    let loads = db.loads();
    assert_eq!(
        within_10s(read(cache, &cached, db)).await,
        Some(widget.clone())
    );
    assert_eq!(
        within_10s(read(cache, &cold, db)).await,
        Some(widget.clone())
    );
    assert_eq!(
        within_10s(read_page(cache, db)).await,
        Some(Page {
            names: vec!["one".to_owned()]
        })
    );
    assert_eq!(db.loads(), loads + 3, "every read went to the loader");

    assert!(
        within_10s(cache.invalidate(&[Invalidation::remove(cached.clone())]))
            .await
            .is_err(),
        "the caller learns that the invalidation was not applied"
    );
    assert!(
        within_10s(cache.invalidate(&[Invalidation::at_version(cached, 2)]))
            .await
            .is_err()
    );
    assert!(within_10s(cache.invalidate_group(PAGES)).await.is_err());
}

/// How Redis stops answering.
enum Outage {
    /// The server is killed: connections are refused.
    Down,
    /// The server is frozen (SIGSTOP): connections hang, and only the command timeout
    /// gets a request out.
    Frozen,
}

/// Caches widget 1 over a private Redis, takes Redis away as `outage` says, and checks
/// [`assert_fails_open`].
async fn fails_open_when(test_name: &str, outage: Outage) {
    let Some((mut server, cache)) = service_over_private_redis(test_name).await else {
        return;
    };
    let db = Db::with(Widget::new(1, 1, "one"));
    read(&cache, &cache.key(WIDGET, 1), &db).await;
    read(&cache, &cache.key(WIDGET, 1), &db).await;
    assert_eq!(db.loads(), 1, "cached while Redis is up");

    match outage {
        Outage::Down => server.stop(),
        Outage::Frozen => server.freeze().expect("SIGSTOP"),
    }

    assert_fails_open(&cache, &db).await;
    if let Outage::Frozen = outage {
        server.thaw().expect("SIGCONT");
    }
}

#[tokio::test]
async fn reads_return_the_loaders_value_and_invalidations_fail_when_redis_is_down() {
    fails_open_when(
        "reads_return_the_loaders_value_and_invalidations_fail_when_redis_is_down",
        Outage::Down,
    )
    .await;
}

#[tokio::test]
async fn reads_return_the_loaders_value_and_invalidations_fail_when_redis_is_frozen() {
    fails_open_when(
        "reads_return_the_loaders_value_and_invalidations_fail_when_redis_is_frozen",
        Outage::Frozen,
    )
    .await;
}

#[tokio::test]
async fn the_service_caches_again_once_redis_is_back() {
    let Some((mut server, cache)) =
        service_over_private_redis("the_service_caches_again_once_redis_is_back").await
    else {
        return;
    };
    let db = Db::with(Widget::new(1, 1, "one"));
    let key = cache.key(WIDGET, 1);
    server.stop();
    assert_eq!(
        read(&cache, &key, &db).await,
        Some(Widget::new(1, 1, "one"))
    );

    server
        .restart()
        .expect("redis-server restarts on the same port");

    // Each pooled connection reconnects on its own backoff, and a read on one that is
    // still down fails open to the loader; so wait for the outcome, not for one ping.
    // The restarted server is empty, so a hit proves a load was stored after it came back.
    let served_from_cache = async {
        loop {
            let loads = db.loads();
            assert_eq!(
                read(&cache, &key, &db).await,
                Some(Widget::new(1, 1, "one"))
            );
            if db.loads() == loads {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), served_from_cache)
        .await
        .expect("within 10 s a read is a cache hit again");
}
