//! A customer's cached list page is invalidated by a write to one of its orders, made by
//! the service or by anyone else, and only by those: other customers' pages stay cached
//! (each customer's pages are a scope of the list group of their own).

use orders_example::{CustomerPage, OrderPage, OrderStatus};

use crate::support::{Env, order_id};

on_both_databases!(
    a_write_to_one_of_a_customers_orders_invalidates_the_cached_page,
    an_order_inserted_with_raw_sql_appears_on_the_cached_page,
    a_write_to_one_customers_order_leaves_the_other_customers_pages_cached,
    an_order_given_to_another_customer_with_raw_sql_moves_both_customers_pages,
);

fn first_page(customer: i64) -> CustomerPage {
    CustomerPage::parse(customer, 1, 20).expect("a valid page")
}

/// The page as `(id, status)` pairs and its total.
fn summary(page: &OrderPage) -> (Vec<(i64, OrderStatus)>, u64) {
    (
        page.items.iter().map(|o| (o.id, o.status)).collect(),
        page.total,
    )
}

async fn a_write_to_one_of_a_customers_orders_invalidates_the_cached_page(env: Env) {
    let a = env.place(7, 1_000).await;
    let b = env.place(7, 2_000).await;
    let elsewhere = env.place(8, 500).await;
    let page = first_page(7);
    let before = env.service.find_page(&page).await.expect("page");
    assert_eq!(
        summary(&before),
        (
            vec![(a.id, OrderStatus::Pending), (b.id, OrderStatus::Pending)],
            2
        )
    );
    assert!(env.page_is_cached(&page).await, "cached before the write");
    assert_eq!(
        env.service
            .find_page(&first_page(8))
            .await
            .expect("page")
            .items,
        vec![elsewhere]
    );

    env.set_status(order_id(b.id), OrderStatus::Shipped, "write")
        .await;
    let after = env.service.find_page(&page).await.expect("page");
    assert_eq!(
        summary(&after),
        (
            vec![(a.id, OrderStatus::Pending), (b.id, OrderStatus::Shipped)],
            2
        ),
        "the page shows the status change"
    );
    assert!(env.page_is_cached(&page).await, "and is cached again");

    env.service
        .delete(order_id(a.id), None)
        .await
        .expect("delete");
    let after = env.service.find_page(&page).await.expect("page");
    assert_eq!(
        summary(&after),
        (vec![(b.id, OrderStatus::Shipped)], 1),
        "the page shows the deletion"
    );
    env.finish().await;
}

async fn an_order_inserted_with_raw_sql_appears_on_the_cached_page(env: Env) {
    let a = env.place(7, 1_000).await;
    let page = first_page(7);
    assert_eq!(
        env.service.find_page(&page).await.expect("page").items,
        vec![a.clone()]
    );
    assert!(env.page_is_cached(&page).await, "cached before the insert");

    env.raw_sql(
        "INSERT INTO orders (customer_id, total_cents, status, version) \
         VALUES (7, 999, 'pending', 1)",
    )
    .await;
    env.relay_caught_up().await;

    let after = env.service.find_page(&page).await.expect("page");
    assert_eq!(after.total, 2, "the inserted order is counted");
    assert_eq!(after.items[0], a);
    assert_eq!(
        (after.items[1].customer_id, after.items[1].total_cents),
        (7, 999),
        "and listed"
    );
    env.finish().await;
}

async fn a_write_to_one_customers_order_leaves_the_other_customers_pages_cached(env: Env) {
    let mine = env.place(7, 1_000).await;
    env.place(8, 500).await;
    for customer in [7, 8] {
        env.service
            .find_page(&first_page(customer))
            .await
            .expect("page");
        assert!(env.page_is_cached(&first_page(customer)).await);
    }

    env.set_status(order_id(mine.id), OrderStatus::Paid, "write")
        .await;
    assert!(
        !env.page_is_cached(&first_page(7)).await,
        "customer 7's page moved on"
    );
    assert!(
        env.page_is_cached(&first_page(8)).await,
        "customer 8's page is still cached: the next read is a hit"
    );

    env.place(8, 600).await;
    assert!(
        !env.page_is_cached(&first_page(8)).await,
        "8's order moves 8's pages"
    );
    env.finish().await;
}

async fn an_order_given_to_another_customer_with_raw_sql_moves_both_customers_pages(env: Env) {
    let moved = env.place(7, 1_000).await;
    let kept = env.place(7, 2_000).await;
    let theirs = env.place(8, 500).await;
    for customer in [7, 8] {
        env.service
            .find_page(&first_page(customer))
            .await
            .expect("page");
    }

    env.raw_sql(&format!(
        "UPDATE orders SET customer_id = 8 WHERE id = {}",
        moved.id
    ))
    .await;
    env.relay_caught_up().await;

    let seven = env.service.find_page(&first_page(7)).await.expect("page");
    let eight = env.service.find_page(&first_page(8)).await.expect("page");
    assert_eq!(
        seven.items.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![kept.id],
        "the order left customer 7's page"
    );
    assert_eq!(
        eight.items.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![moved.id, theirs.id],
        "and is on customer 8's"
    );
    env.finish().await;
}
