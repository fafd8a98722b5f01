//! Scopes of a group and TTLs per namespace, over each backend: a scope moves on alone,
//! a write moves the whole group and the scopes it names and no other, and a namespace
//! with a TTL of its own expires on it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_service::{
    CacheConfig, CacheService, Group, Invalidation, MemoryBackend, Namespace, Scope,
};
use fred::prelude::KeysInterface;

use crate::support::{Db, Env, Page, WIDGET, Widget, read, test_config};

const PAGES: Group = Group::new("widget_page");

on_both_backends!(realtime:
    invalidating_a_scope_reloads_its_members_only,
    a_write_moves_the_whole_group_and_the_scopes_it_names_and_no_other,
    scopes_keep_apart_whatever_their_values_hold,
);

/// A loader of list pages that counts its calls; a page reads "{edition} {scope}", so a
/// test can tell which load produced it.
#[derive(Debug, Default)]
struct Pages {
    loads: AtomicUsize,
}

impl Pages {
    async fn read(&self, cache: &CacheService, scope: &Scope, edition: &str) -> String {
        let label = format!("{edition} {}", scope.value().unwrap_or("*"));
        let Ok(page) = cache
            .get_or_load_in(scope, "p1", || async {
                self.loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>(Some(Page { names: vec![label] }))
            })
            .await;
        page.expect("the loader returns a page").names.remove(0)
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

/// The whole group and scopes `a`, `b`, `c` of it.
fn lists() -> [Scope; 4] {
    [
        PAGES.into(),
        PAGES.scope("a"),
        PAGES.scope("b"),
        PAGES.scope("c"),
    ]
}

pub async fn invalidating_a_scope_reloads_its_members_only(env: &Env) {
    let cache = env.service();
    let pages = Pages::default();
    for list in &lists() {
        pages.read(&cache, list, "first").await;
        pages.read(&cache, list, "second").await;
    }
    assert_eq!(pages.loads(), 4, "each list's page is cached");

    cache
        .invalidate_group(PAGES.scope("a"))
        .await
        .expect("invalidate_group");

    let read: Vec<String> =
        futures::future::join_all(lists().iter().map(|list| pages.read(&cache, list, "third")))
            .await;
    assert_eq!(
        read,
        ["first *", "third a", "first b", "first c"],
        "only scope a was reloaded"
    );
    assert_eq!(pages.loads(), 5);
}

pub async fn a_write_moves_the_whole_group_and_the_scopes_it_names_and_no_other(env: &Env) {
    let cache = env.service();
    let pages = Pages::default();
    for list in &lists() {
        pages.read(&cache, list, "first").await;
    }

    // Widget 1 moved from scope a to scope b and is at version 2 now.
    let item = Invalidation::at_version(cache.key(WIDGET, 1), 2);
    let moved = [PAGES.into(), PAGES.scope("a"), PAGES.scope("b")];
    cache
        .invalidate_write(&[item], &moved)
        .await
        .expect("invalidate_write");

    let mut read = Vec::new();
    for list in &lists() {
        read.push(pages.read(&cache, list, "second").await);
    }
    assert_eq!(
        read,
        ["second *", "second a", "second b", "first c"],
        "the whole group and both scopes moved; c did not"
    );
}

/// Scope values are spelled into keys: values that look like each other's keys, or hold
/// hash-tag braces, still get counters and members of their own (on a cluster too).
pub async fn scopes_keep_apart_whatever_their_values_hold(env: &Env) {
    let cache = env.service();
    let pages = Pages::default();
    let values = ["a:p1", "a", "", "{a}", "%7Ba%7D", "s1:a", "g1"];
    let scopes: Vec<Scope> = std::iter::once(PAGES.into())
        .chain(values.iter().map(|v| PAGES.scope(v)))
        .collect();
    for scope in &scopes {
        pages.read(&cache, scope, "first").await;
    }
    for scope in &scopes {
        let label = scope.value().unwrap_or("*");
        assert_eq!(
            pages.read(&cache, scope, "second").await,
            format!("first {label}")
        );
    }
    assert_eq!(pages.loads(), scopes.len(), "one member each, none shared");

    cache
        .invalidate_group(PAGES.scope("{a}"))
        .await
        .expect("invalidate_group");
    for scope in &scopes {
        let edition = if scope.value() == Some("{a}") {
            "third"
        } else {
            "first"
        };
        let label = scope.value().unwrap_or("*");
        assert_eq!(
            pages.read(&cache, scope, "third").await,
            format!("{edition} {label}")
        );
    }
}

const SHORT: Namespace = PAGES.namespace();
const SHORT_TTL: Duration = Duration::from_secs(60);
const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// List pages live a minute, widgets the default five.
fn short_pages(prefix: &str) -> CacheConfig {
    CacheConfig {
        ttl: DEFAULT_TTL,
        ..test_config(prefix)
    }
    .with_ttl(SHORT, SHORT_TTL)
}

/// On the memory store: the TTLs it stored, then the clock moved past the short one (a
/// paused clock: no real time passes).
#[tokio::test(start_paused = true)]
async fn on_memory_a_namespace_with_its_own_ttl_expires_on_it_and_the_others_do_not() {
    let store = Arc::new(MemoryBackend::new(10_000));
    let cache = CacheService::new(store.clone(), short_pages("ttl_memory")).expect("config");
    let db = Db::with(Widget::new(1, 1, "one"));
    let pages = Pages::default();
    let key = cache.key(WIDGET, 1);
    let list: Scope = PAGES.scope("a");
    read(&cache, &key, &db).await;
    pages.read(&cache, &list, "first").await;

    let generation_key = cache.generation_key(&list);
    let generation = cache
        .backend()
        .generation(&generation_key)
        .await
        .expect("generation");
    let page_key = cache.member_key(&list, "p1").at(generation);
    assert_eq!(
        store.ttl(&key),
        Some(DEFAULT_TTL),
        "a widget lives the default"
    );
    assert_eq!(store.ttl(&page_key), Some(SHORT_TTL), "a page its own");

    tokio::time::advance(SHORT_TTL + Duration::from_secs(1)).await;
    assert_eq!(store.ttl(&page_key), None, "the page expired");
    pages.read(&cache, &list, "second").await;
    read(&cache, &key, &db).await;
    assert_eq!(pages.loads(), 2, "the page was loaded again");
    assert_eq!(db.loads(), 1, "the widget was not");
}

/// On Redis: the TTLs Redis holds (`PTTL`), no waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_namespace_with_its_own_ttl_is_stored_with_it() {
    let Some(env) = Env::redis("ttl_per_namespace").await else {
        return;
    };
    let cache = CacheService::new(env.backend.clone(), short_pages(&env.prefix)).expect("config");
    let db = Db::with(Widget::new(1, 1, "one"));
    let pages = Pages::default();
    let key = cache.key(WIDGET, 1);
    let list: Scope = PAGES.into();
    read(&cache, &key, &db).await;
    pages.read(&cache, &list, "first").await;

    let client = &env.redis.as_ref().expect("a Redis env").client;
    let generation: u64 = client
        .get(cache.generation_key(&list))
        .await
        .expect("GET generation");
    let page_key = cache.member_key(&list, "p1").at(generation);
    let pttl = |key: String| async move {
        let ms: i64 = client.pttl(key).await.expect("PTTL");
        Duration::from_millis(u64::try_from(ms).expect("the key has a TTL"))
    };
    let widget_ttl = pttl(key.as_str().to_owned()).await;
    let page_ttl = pttl(page_key.as_str().to_owned()).await;
    assert!(
        widget_ttl > SHORT_TTL && widget_ttl <= DEFAULT_TTL,
        "a widget lives the default: {widget_ttl:?}"
    );
    assert!(
        page_ttl > SHORT_TTL - Duration::from_secs(10) && page_ttl <= SHORT_TTL,
        "a page its own: {page_ttl:?}"
    );
    env.cleanup().await;
}

#[test]
fn a_zero_ttl_for_a_namespace_is_refused_by_name() {
    let config = CacheConfig::with_prefix("zero").with_ttl(SHORT, Duration::ZERO);
    let error = CacheService::in_memory(config, 10).expect_err("refused");
    assert!(
        error.to_string().contains("namespace_ttls: widget_page"),
        "{error}"
    );
    let twice = CacheConfig {
        namespace_ttls: vec![(SHORT, SHORT_TTL), (SHORT, DEFAULT_TTL)],
        ..CacheConfig::with_prefix("twice")
    };
    let error = twice.validate().expect_err("refused");
    assert!(error.to_string().contains("given twice"), "{error}");
}
