//! List pages of one category live in that category's scope of the list group: a write
//! moves the unfiltered pages and the pages of the categories it touched (both, when a
//! product moves), whoever made it, and leaves every other category's pages cached.
//!
//! To tell a page served from the cache from one loaded again, each test plants a
//! marker page (`total` = [`MARKER`]) in Redis under the keys of the pages it warmed: a
//! read that returns the marker was a hit (its loader did not run); a read that returns
//! the database's rows was a miss.

use std::time::Duration;

use cache_service::{Scope, codec};
use fred::prelude::{ClientLike, KeysInterface};
use integration_tests::eventually;
use integration_tests::fixtures::{Fixture, id, new_product, price_patch};
use product_service::{
    Category, CoherenceConfig, NewProduct, PRODUCT_LIST, PRODUCT_TABLE, PageQuery, Product,
    ProductPage, ProductPatch,
};
use sea_orm::{ConnectionTrait, Database};

integration_tests::on_both_databases!("scopes_":
    a_write_in_one_category_leaves_the_pages_of_the_others_cached,
    moving_a_product_to_another_category_reloads_both_categories,
    creating_and_deleting_reload_their_category_only,
    a_raw_sql_move_reaches_both_categories_through_the_relay,
    a_raw_sql_move_overtaken_by_a_service_write_still_reaches_its_old_category,
    a_database_migrated_before_scoped_lists_upgrades_and_its_owed_rows_drain,
);

/// How long a relay gets to show a raw SQL write.
const WAIT: Duration = Duration::from_secs(5);

/// The `total` of a planted page: no real page has it.
const MARKER: u64 = 424_242;

fn in_category(sku: &str, category: &str) -> NewProduct {
    NewProduct {
        category: Category::parse(category).expect("valid category"),
        ..new_product(sku, 100)
    }
}

/// The first page of `category`, or of every product.
fn page_of(category: Option<&str>) -> PageQuery {
    PageQuery::parse(1, 20, category.map(str::to_owned)).expect("valid page")
}

/// The list `category`'s pages are cached in.
fn list(category: Option<&str>) -> Scope {
    match category {
        Some(category) => PRODUCT_LIST.scope(category),
        None => PRODUCT_LIST.into(),
    }
}

async fn read_page(f: &Fixture, category: Option<&str>) -> ProductPage {
    f.service
        .find_in_page(&page_of(category))
        .await
        .expect("page")
}

/// Reads the first page of each list (so it is cached), then replaces what Redis holds
/// for it with a marker page.
async fn warm_and_mark(f: &Fixture, categories: &[Option<&str>]) {
    for category in categories {
        read_page(f, *category).await;
        let cache = f.service.cache();
        let generation: u64 = f
            .redis
            .get(cache.generation_key(list(*category)))
            .await
            .expect("GET generation");
        // Every member of the list at its current generation: the key of member "" ends
        // in `}`; the first page's key has the member's id in its place.
        let empty = cache.member_key(list(*category), "").at(generation);
        let pattern = format!("{}*", empty.as_str().trim_end_matches('}'));
        let keys: Vec<String> = f
            .redis
            .custom(fred::cmd!("KEYS"), vec![pattern])
            .await
            .expect("KEYS");
        assert_eq!(
            keys.len(),
            1,
            "one page of {category:?} is cached: {keys:?}"
        );
        let marker = ProductPage {
            items: Vec::new(),
            page: 1,
            per_page: 20,
            total: MARKER,
        };
        let entry = codec::encode(0, &marker).expect("encodes");
        let _: () = f
            .redis
            .set(
                &keys[0],
                bytes::Bytes::from(entry),
                Some(fred::types::Expiration::EX(300)),
                None,
                false,
            )
            .await
            .expect("SET marker");
    }
}

/// Whether `category`'s first page is served from the cache (the planted marker).
async fn served_from_cache(f: &Fixture, category: Option<&str>) -> bool {
    read_page(f, category).await.total == MARKER
}

fn ids(page: &ProductPage) -> Vec<i64> {
    page.items.iter().map(|p| p.id).collect()
}

async fn create(f: &Fixture, sku: &str, category: &str) -> Product {
    f.service
        .create(in_category(sku, category))
        .await
        .expect("create")
}

fn move_to(category: &str) -> ProductPatch {
    ProductPatch {
        category: Some(Category::parse(category).expect("valid category")),
        ..ProductPatch::default()
    }
}

async fn a_write_in_one_category_leaves_the_pages_of_the_others_cached(f: Fixture) {
    let a = create(&f, "A-1", "a").await;
    let b = create(&f, "B-1", "b").await;
    warm_and_mark(&f, &[None, Some("a"), Some("b")]).await;

    f.service
        .patch(id(a.id), price_patch(555), None)
        .await
        .expect("patch");

    let page_a = read_page(&f, Some("a")).await;
    assert_eq!(
        (ids(&page_a), page_a.items[0].price_cents),
        (vec![a.id], 555),
        "a's page was read again and shows the write"
    );
    let all = read_page(&f, None).await;
    assert_eq!(ids(&all), vec![a.id, b.id], "so was the unfiltered page");
    assert_eq!(all.items[0].price_cents, 555);
    assert!(
        served_from_cache(&f, Some("b")).await,
        "b's page is still cached: its loader did not run"
    );
}

async fn moving_a_product_to_another_category_reloads_both_categories(f: Fixture) {
    let p = create(&f, "M-1", "a").await;
    let q = create(&f, "M-2", "b").await;
    create(&f, "M-3", "c").await;
    warm_and_mark(&f, &[None, Some("a"), Some("b"), Some("c")]).await;

    // PATCH: the service does not know the category the product had; the trigger's
    // outbox row does.
    f.service
        .patch(id(p.id), move_to("b"), None)
        .await
        .expect("move to b");

    assert_eq!(read_page(&f, Some("a")).await.total, 0, "it left a");
    assert_eq!(
        ids(&read_page(&f, Some("b")).await),
        vec![p.id, q.id],
        "and is in b"
    );
    assert_ne!(
        read_page(&f, None).await.total,
        MARKER,
        "the unfiltered page moved"
    );
    assert!(served_from_cache(&f, Some("c")).await, "c's page did not");

    // PUT, back to a.
    warm_and_mark(&f, &[Some("a"), Some("b")]).await;
    f.service
        .replace(id(p.id), in_category("M-1", "a"), None)
        .await
        .expect("move back to a");
    assert_eq!(ids(&read_page(&f, Some("a")).await), vec![p.id]);
    assert_eq!(ids(&read_page(&f, Some("b")).await), vec![q.id]);
    assert!(served_from_cache(&f, Some("c")).await);
}

async fn creating_and_deleting_reload_their_category_only(f: Fixture) {
    let a = create(&f, "N-1", "a").await;
    let b = create(&f, "N-2", "b").await;
    warm_and_mark(&f, &[None, Some("a"), Some("b")]).await;

    let created = create(&f, "N-3", "a").await;
    assert_eq!(ids(&read_page(&f, Some("a")).await), vec![a.id, created.id]);
    assert_eq!(read_page(&f, None).await.total, 3);
    assert!(
        served_from_cache(&f, Some("b")).await,
        "a create in a leaves b"
    );

    warm_and_mark(&f, &[None, Some("a")]).await;
    f.service.delete(id(b.id), None).await.expect("delete");
    assert_eq!(
        read_page(&f, Some("b")).await.total,
        0,
        "b lost its product"
    );
    assert_eq!(read_page(&f, None).await.total, 2);
    assert!(
        served_from_cache(&f, Some("a")).await,
        "a delete in b leaves a"
    );
}

async fn a_raw_sql_move_reaches_both_categories_through_the_relay(f: Fixture) {
    let relay = f.service.spawn_relay(CoherenceConfig {
        poll_interval: Duration::from_millis(50),
        ..CoherenceConfig::default()
    });
    relay.first_pass().await;
    let p = create(&f, "R-1", "a").await;
    let q = create(&f, "R-2", "b").await;
    create(&f, "R-3", "c").await;
    warm_and_mark(&f, &[None, Some("a"), Some("b"), Some("c")]).await;

    // An admin tool's UPDATE: no version bump (the trigger adds it), no service.
    f.raw_sql(&format!(
        "UPDATE product SET category = 'b' WHERE id = {}",
        p.id
    ))
    .await;

    let moved = eventually(WAIT, async || {
        read_page(&f, Some("a")).await.total == 0
            && ids(&read_page(&f, Some("b")).await) == vec![p.id, q.id]
    })
    .await;
    assert!(moved, "both categories' pages show the move");
    assert_ne!(read_page(&f, None).await.total, MARKER);
    settled(&f).await;
    assert!(
        served_from_cache(&f, Some("c")).await,
        "c's page stayed cached"
    );

    warm_and_mark(&f, &[Some("a"), Some("b")]).await;
    f.raw_sql(&format!("DELETE FROM product WHERE id = {}", p.id))
        .await;
    let deleted = eventually(WAIT, async || {
        ids(&read_page(&f, Some("b")).await) == vec![q.id]
    })
    .await;
    assert!(deleted, "b's page shows the raw DELETE");
    settled(&f).await;
    assert!(
        served_from_cache(&f, Some("a")).await,
        "a's page stayed cached"
    );
    relay.shutdown().await;
}

/// A product moved by raw SQL (its invalidation owed, for the relay) and then changed
/// through the service, which invalidates inline and names only the category the
/// product is in now. The product's fence is then past the move's version: the relay's
/// replay must still move the category the product left.
async fn a_raw_sql_move_overtaken_by_a_service_write_still_reaches_its_old_category(f: Fixture) {
    let p = create(&f, "O-1", "a").await;
    warm_and_mark(&f, &[Some("a"), Some("b")]).await;
    f.raw_sql(&format!(
        "UPDATE product SET category = 'b' WHERE id = {}",
        p.id
    ))
    .await;

    f.service
        .patch(id(p.id), price_patch(777), None)
        .await
        .expect("patch");
    assert_eq!(
        ids(&read_page(&f, Some("b")).await),
        vec![p.id],
        "the service's write moved b"
    );
    assert!(
        served_from_cache(&f, Some("a")).await,
        "a's page waits for the relay (a raw SQL write's window)"
    );

    f.service
        .relay(100)
        .drain()
        .await
        .expect("the relay's pass");
    assert_eq!(
        read_page(&f, Some("a")).await.total,
        0,
        "a's page no longer lists the product that left it"
    );
}

/// A database migrated before the outbox recorded categories: its triggers write no
/// scope, and it owes a raw SQL write made then. Migrating adds the columns and the
/// scoped triggers; the old row drains; the next move records both categories.
async fn a_database_migrated_before_scoped_lists_upgrades_and_its_owed_rows_drain(f: Fixture) {
    let p = create(&f, "U-1", "a").await;
    let db = Database::connect(&f.database_url).await.expect("connect");
    let backend = db.get_database_backend();
    let unscoped = cache_service::OutboxTable {
        scoped_groups: &[],
        ..PRODUCT_TABLE
    };
    let mut downgrade = unscoped.install_statements(backend).expect("statements");
    downgrade.extend([
        "ALTER TABLE cache_outbox DROP COLUMN old_scope".to_owned(),
        "ALTER TABLE cache_outbox DROP COLUMN new_scope".to_owned(),
        "DELETE FROM product_service_migrations WHERE version LIKE '%category_scoped_lists'"
            .to_owned(),
    ]);
    for sql in &downgrade {
        db.execute_unprepared(sql)
            .await
            .expect("back to migration 8");
    }
    db.execute_unprepared(&format!(
        "UPDATE product SET category = 'b' WHERE id = {}",
        p.id
    ))
    .await
    .expect("a write owed before the upgrade");

    product_service::migrate(&db).await.expect("upgrades");

    assert!(
        f.service.relay(100).drain().await.expect("drains") >= 1,
        "the row owed from before drains"
    );
    db.execute_unprepared(&format!(
        "UPDATE product SET category = 'c' WHERE id = {}",
        p.id
    ))
    .await
    .expect("a move after the upgrade");
    let scopes: Vec<(Option<String>, Option<String>)> =
        integration_tests::select_rows(&db, "SELECT old_scope, new_scope FROM cache_outbox").await;
    assert!(
        scopes.contains(&(Some("b".into()), Some("c".into()))),
        "the outbox records both categories: {scopes:?}"
    );
}

/// Waits until the relay has applied everything owed.
async fn settled(f: &Fixture) {
    let coherence = f.service.relay(100);
    let done = eventually(WAIT, async || {
        coherence.backlog().await.is_ok_and(|n| n == 0)
    })
    .await;
    assert!(done, "the relay applied what was owed");
}
