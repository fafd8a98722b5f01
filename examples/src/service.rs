//! [`OrderService`]: reads through the cache, writes through one method.
//!
//! An order is cached under its id in [`ORDER`], fenced at its version; a customer's list
//! pages are members of that customer's scope of the [`ORDER_PAGE`] group. Every write
//! runs in `OrderService::write` (private): a database transaction (the outbox triggers
//! record what it owes inside it, with the order's customer), the commit, then
//! [`Coherence::after_commit`], which moves the customer's scope to a new generation and
//! invalidates the order's key at its new version. Other customers' pages stay cached.

use cache_service::{
    CacheKey, CacheService, Cacheable, Change, Coherence, CoherenceConfig, Group, Namespace,
    OutboxTable, RelayHandle, ScopedGroup,
};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DatabaseTransaction,
    DbErr, EntityTrait, ExprTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use serde::{Deserialize, Serialize};

use crate::domain::{CustomerPage, NewOrder, OrderId, OrderStatus, Version};
use crate::error::{Error, Result};
use crate::schema::order;

/// Cache namespace of single orders (also the `namespace` metric label).
pub const ORDER: Namespace = Namespace::new("order");
/// Cache group of the customers' list pages, one scope per customer: an order write
/// invalidates its customer's pages only.
pub const ORDER_PAGE: Group = Group::new("order_page");
/// The `orders` table as the coherence component knows it: its triggers record every
/// change of an order in the outbox, with its customer, whoever makes it.
pub const ORDERS_TABLE: OutboxTable = OutboxTable {
    table: "orders",
    id_column: "id",
    version_column: "version",
    namespace: ORDER,
    groups: &[],
    scoped_groups: &[ScopedGroup {
        group: ORDER_PAGE,
        column: "customer_id",
    }],
};

/// An order as readers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Assigned by the database.
    pub id: i64,
    /// Whose order it is.
    pub customer_id: i64,
    /// What it costs, in cents.
    pub total_cents: i64,
    /// Where it is.
    pub status: OrderStatus,
    /// Starts at 1, grows on every change (whoever makes it: a trigger sees to that).
    pub version: i64,
}

impl Cacheable for Order {
    fn version(&self) -> u64 {
        self.version.unsigned_abs()
    }
}

impl From<order::Model> for Order {
    fn from(m: order::Model) -> Self {
        Self {
            id: m.id,
            customer_id: m.customer_id,
            total_cents: m.total_cents,
            status: m.status,
            version: m.version,
        }
    }
}

/// One page of a customer's orders, ordered by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPage {
    /// Whose orders.
    pub customer_id: i64,
    /// The 1-based page number.
    pub page: u32,
    /// Page size asked for.
    pub per_page: u32,
    /// The customer's orders on all pages.
    pub total: u64,
    /// The orders on this page.
    pub items: Vec<Order>,
}

impl OrderPage {
    fn empty(query: &CustomerPage) -> Self {
        Self {
            customer_id: query.customer().get(),
            page: query.page(),
            per_page: query.per_page(),
            total: 0,
            items: Vec::new(),
        }
    }
}

impl Cacheable for OrderPage {
    fn version(&self) -> u64 {
        0 // a page is invalidated by its group's generation, not by a version fence
    }
}

/// Reads and writes orders. Cloning is shallow: clones share the connection pool, the
/// cache and the coherence component.
#[derive(Debug, Clone)]
pub struct OrderService {
    db: DatabaseConnection,
    coherence: Coherence,
}

impl OrderService {
    /// A service over a database migrated by [`migrate`](crate::migrate) and a cache.
    /// Fails ([`cache_service::CacheError::MissingSessionSettings`], as
    /// [`Error::Cache`]) when `db`'s sessions lack the settings
    /// [`connect`](crate::connect) gives them.
    pub async fn new(db: DatabaseConnection, cache: CacheService) -> Result<Self> {
        Self::with_config(db, cache, CoherenceConfig::default()).await
    }

    /// [`new`](Self::new) with the coherence settings (relay pace, how long a write waits
    /// for a relay when it cannot invalidate itself).
    pub async fn with_config(
        db: DatabaseConnection,
        cache: CacheService,
        config: CoherenceConfig,
    ) -> Result<Self> {
        Ok(Self {
            coherence: Coherence::new(db.clone(), cache, &[ORDERS_TABLE], config).await?,
            db,
        })
    }

    /// Starts this process's relay, which applies what the outbox owes (writes by other
    /// processes, raw SQL, writes whose inline invalidation failed) and keeps reads off
    /// the cache after an outage until that is done. Every process that reads runs one.
    /// Fails ([`cache_service::CacheError::Incoherent`], as [`Error::Cache`]) when the set-up cannot be coherent: an
    /// in-process cache next to another process on the same database.
    pub async fn start_relay(&self) -> Result<RelayHandle> {
        Ok(self.coherence.start_relay().await?)
    }

    /// The cache.
    pub fn cache(&self) -> &CacheService {
        self.coherence.cache()
    }

    /// The coherence component (backlog, drain).
    pub fn coherence(&self) -> &Coherence {
        &self.coherence
    }

    /// The cache key of order `id`.
    pub fn order_key(&self, id: OrderId) -> CacheKey {
        self.cache().key(ORDER, id)
    }

    /// Order `id`, from the cache when possible.
    pub async fn find(&self, id: OrderId) -> Result<Order> {
        let found = self
            .cache()
            .get_or_load(&self.order_key(id), || self.load(id))
            .await?;
        found.ok_or(Error::NotFound { id })
    }

    /// One page of a customer's orders, from the cache when possible (in the customer's
    /// scope of [`ORDER_PAGE`]).
    pub async fn find_page(&self, query: &CustomerPage) -> Result<OrderPage> {
        let pages = ORDER_PAGE.scope(query.customer().get());
        let page = self
            .cache()
            .get_or_load_in(pages, query.cache_member(), || self.load_page(query))
            .await?;
        // The loader always returns a page, so no "absent" page is ever cached.
        Ok(page.unwrap_or_else(|| OrderPage::empty(query)))
    }

    /// Order `id` straight from the database: what a cache miss runs. Public so a test
    /// can hold a read between its database query and its fill.
    pub async fn load(&self, id: OrderId) -> Result<Option<Order>> {
        let model = order::Entity::find_by_id(id.get()).one(&self.db).await?;
        Ok(model.map(Order::from))
    }

    async fn load_page(&self, query: &CustomerPage) -> Result<Option<OrderPage>> {
        let select =
            order::Entity::find().filter(order::Column::CustomerId.eq(query.customer().get()));
        let total = select.clone().count(&self.db).await?;
        let items = select
            .order_by_asc(order::Column::Id)
            .offset(query.offset())
            .limit(u64::from(query.per_page()))
            .all(&self.db)
            .await?;
        Ok(Some(OrderPage {
            customer_id: query.customer().get(),
            page: query.page(),
            per_page: query.per_page(),
            total,
            items: items.into_iter().map(Order::from).collect(),
        }))
    }

    /// Places an order: `pending`, version 1.
    pub async fn place(&self, new: NewOrder) -> Result<Order> {
        self.write(async |txn| {
            let row = order::ActiveModel {
                customer_id: Set(new.customer.get()),
                total_cents: Set(new.total.get()),
                status: Set(OrderStatus::Pending),
                version: Set(1),
                ..Default::default()
            };
            let model = row.insert(txn).await?;
            let change = Change::created(ORDER, model.id).with_scopes([model.customer_id]);
            Ok((change, Order::from(model)))
        })
        .await
    }

    /// Moves order `id` to `status`. With `expected`, only if the order is still at that
    /// version ([`Error::VersionMismatch`] otherwise, and nothing changes).
    pub async fn set_status(
        &self,
        id: OrderId,
        status: OrderStatus,
        expected: Option<Version>,
    ) -> Result<Order> {
        use order::Column as C;
        self.write(async |txn| {
            // One atomic statement: the version moves on in the UPDATE that changes the
            // row, never by read-modify-write.
            let mut update = order::Entity::update_many()
                .set(order::ActiveModel {
                    status: Set(status),
                    ..Default::default()
                })
                .col_expr(C::Version, Expr::col(C::Version).add(1))
                .filter(C::Id.eq(id.get()));
            if let Some(expected) = expected {
                update = update.filter(C::Version.eq(expected.get()));
            }
            let Some(model) = update.exec_with_returning(txn).await?.pop() else {
                return Err(missed(txn, id, expected).await);
            };
            let change =
                Change::at_version(ORDER, model.id, model.version).with_scopes([model.customer_id]); // a status change keeps the customer
            Ok((change, Order::from(model)))
        })
        .await
    }

    /// Deletes order `id`. With `expected`, only if it is still at that version.
    pub async fn delete(&self, id: OrderId, expected: Option<Version>) -> Result<()> {
        use order::Column as C;
        self.write(async |txn| {
            let mut delete = order::Entity::delete_many().filter(C::Id.eq(id.get()));
            if let Some(expected) = expected {
                delete = delete.filter(C::Version.eq(expected.get()));
            }
            let Some(gone) = delete.exec_with_returning(txn).await?.pop() else {
                return Err(missed(txn, id, expected).await);
            };
            // A deleted row counts as one version past its last: every cached copy and
            // every in-flight fill of an older version is refused.
            let change = Change::at_version(ORDER, gone.id, gone.version + 1)
                .with_scopes([gone.customer_id]);
            Ok((change, ()))
        })
        .await
    }

    /// The one write path: `op` runs in a transaction and names the row it changed; the
    /// transaction commits; then, never before, the change's invalidation is applied
    /// ([`Coherence::after_commit`]: inline, or by a relay while the write waits a
    /// bounded time). An error from `op` drops the transaction, which rolls back, and
    /// nothing is invalidated.
    ///
    /// `op` must use the transaction it is given, never `self.db`: on `sqlite::memory:`
    /// the pool has one connection, which the transaction holds.
    async fn write<T>(
        &self,
        op: impl AsyncFnOnce(&DatabaseTransaction) -> Result<(Change, T)>,
    ) -> Result<T> {
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                // SQLite: take the write lock at BEGIN, so concurrent writers queue on
                // the busy timeout instead of failing at commit.
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?;
        let (change, value) = op(&txn).await?;
        txn.commit().await?;
        // Never fails: what it cannot apply stays owed in the outbox, for the relays.
        self.coherence.after_commit(&[change]).await;
        Ok(value)
    }
}

/// An `UPDATE`/`DELETE` matched no row: the order does not exist, or is at another
/// version than `expected`. Looked up in the same transaction.
async fn missed(txn: &DatabaseTransaction, id: OrderId, expected: Option<Version>) -> Error {
    match order::Entity::find_by_id(id.get()).one(txn).await {
        Ok(None) => Error::NotFound { id },
        Ok(Some(row)) => match expected {
            Some(expected) => Error::VersionMismatch {
                expected,
                actual: row.version,
            },
            // Created by a concurrent transaction after this statement looked.
            None => Error::Database(DbErr::RecordNotUpdated),
        },
        Err(error) => Error::Database(error),
    }
}
