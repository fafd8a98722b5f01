//! ProductService against real databases (SQLite and PostgreSQL) and a real Redis:
//! every write invalidates exactly what it made stale, after commit, and nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use integration_tests::fixtures::{Fixture, first_page, id, new_product, price_patch};
use product_service::{Error, PageQuery, ProductPatch, Sku, Version};

integration_tests::on_both_databases!("":
    reads_are_cached_under_the_prefix_and_writes_show_at_once,
    list_pages_reflect_create_update_and_delete,
    a_write_invalidates_its_product_and_leaves_others_cached,
    a_rolled_back_write_invalidates_nothing,
    duplicate_skus_are_a_typed_error,
    a_stale_expected_version_changes_nothing,
    concurrent_patches_each_bump_the_version_once,
    of_concurrent_patches_expecting_one_version_one_wins_and_the_rest_mismatch,
    deleted_products_read_as_not_found,
    an_empty_patch_changes_nothing,
);

async fn reads_are_cached_under_the_prefix_and_writes_show_at_once(f: Fixture) {
    let created = f.create("A-1", 100).await;
    assert_eq!(created.version, 1);

    let read = f.read(created.id).await;
    assert_eq!(read, created);
    assert!(
        f.is_cached(created.id).await,
        "the read left {} in Redis",
        f.item_key(created.id)
    );

    let patched = f.patch_price(created.id, 250).await;
    assert_eq!((patched.price_cents, patched.version), (250, 2));
    let read = f.read(created.id).await;
    assert_eq!(
        read.price_cents, 250,
        "a read after PATCH shows the new price"
    );

    let replaced = f
        .service
        .replace(id(created.id), new_product("A-1b", 300), None)
        .await
        .expect("replace");
    assert_eq!((replaced.sku.as_str(), replaced.version), ("A-1b", 3));
    let read = f.read(created.id).await;
    assert_eq!(
        (read.sku.as_str(), read.price_cents),
        ("A-1b", 300),
        "a read after PUT shows it"
    );
}

async fn list_pages_reflect_create_update_and_delete(f: Fixture) {
    let a = f.create("L-1", 1).await;
    let page = f.service.find_in_page(&first_page()).await.expect("page");
    assert_eq!(page.total, 1);

    let b = f.create("L-2", 2).await;
    let page = f.service.find_in_page(&first_page()).await.expect("page");
    assert_eq!(
        page.items.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![a.id, b.id],
        "create shows"
    );

    f.patch_price(b.id, 99).await;
    let page = f.service.find_in_page(&first_page()).await.expect("page");
    assert_eq!(page.items[1].price_cents, 99, "update shows in the list");

    f.service.delete(id(a.id), None).await.expect("delete");
    let page = f.service.find_in_page(&first_page()).await.expect("page");
    assert_eq!(
        (page.total, page.items.len(), page.items[0].id),
        (1, 1, b.id),
        "delete shows"
    );

    let filtered = f
        .service
        .find_in_page(&PageQuery::parse(1, 20, Some("other".into())).expect("valid"))
        .await
        .expect("page");
    assert_eq!(filtered.total, 0, "the category filter applies");
}

async fn a_write_invalidates_its_product_and_leaves_others_cached(f: Fixture) {
    let a = f.create("W-1", 1).await;
    let b = f.create("W-2", 2).await;
    f.read(a.id).await;
    f.read(b.id).await;
    let generation = f.list_generation().await;

    f.patch_price(a.id, 5).await;

    assert!(
        !f.is_cached(a.id).await,
        "the written product was invalidated"
    );
    assert!(f.is_cached(b.id).await, "the other product stayed cached");
    assert_ne!(
        f.list_generation().await,
        generation,
        "the list group moved on"
    );
}

async fn a_rolled_back_write_invalidates_nothing(f: Fixture) {
    let a = f.create("R-1", 1).await;
    f.create("R-2", 2).await;
    f.read(a.id).await;
    f.service
        .find_in_page(&first_page())
        .await
        .expect("warm list");
    let generation = f.list_generation().await;

    let clash = ProductPatch {
        sku: Some(Sku::parse("R-2").expect("valid")),
        ..ProductPatch::default()
    };
    let result = f.service.patch(id(a.id), clash, None).await;

    assert!(matches!(result, Err(Error::DuplicateSku(_))), "{result:?}");
    assert!(f.is_cached(a.id).await, "a failed write removed nothing");
    assert_eq!(
        f.list_generation().await,
        generation,
        "nor moved the list group"
    );
    let read = f.read(a.id).await;
    assert_eq!(
        (read.sku.as_str(), read.version),
        ("R-1", 1),
        "and changed nothing"
    );
}

async fn duplicate_skus_are_a_typed_error(f: Fixture) {
    f.create("D-1", 1).await;
    let again = f.service.create(new_product("D-1", 2)).await;
    assert!(
        matches!(&again, Err(Error::DuplicateSku(sku)) if sku.as_str() == "D-1"),
        "{again:?}"
    );
}

async fn a_stale_expected_version_changes_nothing(f: Fixture) {
    let a = f.create("V-1", 1).await;
    f.patch_price(a.id, 2).await;

    let stale = Some(Version::parse(1).expect("valid"));
    let result = f.service.patch(id(a.id), price_patch(3), stale).await;
    assert!(
        matches!(result, Err(Error::VersionMismatch { expected, actual }) if expected.get() == 1 && actual.get() == 2),
        "{result:?}"
    );
    let result = f.service.delete(id(a.id), stale).await;
    assert!(
        matches!(result, Err(Error::VersionMismatch { .. })),
        "{result:?}"
    );

    let read = f.read(a.id).await;
    assert_eq!((read.price_cents, read.version), (2, 2));
    let current = Some(Version::parse(2).expect("valid"));
    let patched = f
        .service
        .patch(id(a.id), price_patch(4), current)
        .await
        .expect("current version");
    assert_eq!(patched.version, 3);
}

async fn concurrent_patches_each_bump_the_version_once(f: Fixture) {
    let a = f.create("C-1", 0).await;
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let service = f.service.clone();
            let done = done.clone();
            tokio::spawn(async move {
                service
                    .patch(id(a.id), price_patch(i), None)
                    .await
                    .expect("patch");
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(done.load(Ordering::SeqCst), 20);
    let read = f.read(a.id).await;
    assert_eq!(read.version, 21, "no update was lost");
}

async fn of_concurrent_patches_expecting_one_version_one_wins_and_the_rest_mismatch(f: Fixture) {
    let a = f.create("C-2", 0).await;
    let v1 = Some(Version::parse(1).expect("valid"));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let service = f.service.clone();
            tokio::spawn(async move { service.patch(id(a.id), price_patch(i), v1).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(product) => {
                won += 1;
                assert_eq!(product.version, 2);
            }
            Err(Error::VersionMismatch { expected, .. }) => assert_eq!(expected.get(), 1),
            Err(other) => panic!("a lost race is a version mismatch, not {other:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one patch saw version 1");
    let read = f.read(a.id).await;
    assert_eq!(read.version, 2);
}

async fn deleted_products_read_as_not_found(f: Fixture) {
    let a = f.create("X-1", 1).await;
    f.read(a.id).await;
    f.service.delete(id(a.id), None).await.expect("delete");
    let read = f.service.find_by_id(id(a.id)).await;
    assert!(matches!(read, Err(Error::NotFound { .. })), "{read:?}");
    let again = f.service.delete(id(a.id), None).await;
    assert!(matches!(again, Err(Error::NotFound { .. })), "{again:?}");
    let missing = f.service.find_by_id(id(999_999)).await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
}

async fn an_empty_patch_changes_nothing(f: Fixture) {
    let a = f.create("E-1", 1).await;
    let same = f
        .service
        .patch(id(a.id), ProductPatch::default(), None)
        .await
        .expect("patch");
    assert_eq!(same, a);
    let stale = f
        .service
        .patch(
            id(a.id),
            ProductPatch::default(),
            Some(Version::parse(7).expect("valid")),
        )
        .await;
    assert!(
        matches!(stale, Err(Error::VersionMismatch { .. })),
        "{stale:?}"
    );
}

/// A product created after its id was read as absent shows at once: creation removes the
/// negative entry.
#[tokio::test]
async fn creating_a_product_replaces_its_cached_absence() {
    let Some(f) = Fixture::sqlite("creating_replaces_absence").await else {
        return;
    };
    // SQLite assigns id 1 to the first product.
    assert!(matches!(
        f.service.find_by_id(id(1)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(f.is_cached(1).await, "the absence was cached");
    let created = f.create("N-1", 1).await;
    assert_eq!(created.id, 1);
    assert_eq!(f.read(1).await.sku, "N-1");
}
