//! The `orders` table: connecting, migrating (the coherence tables, the table, its outbox
//! triggers), and the sea-orm entity, private to the crate.

use std::time::Duration;

use sea_orm::sea_query::{Alias, IntoIden};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use sea_orm_migration::prelude::*;

use crate::service::ORDERS_TABLE;

/// Connects to `url` (`sqlite://…`, `sqlite::memory:` or `postgres://…`).
///
/// - An SQLite file gets WAL and a 5 s busy timeout: readers do not block the writer,
///   and writers queue instead of failing.
/// - `sqlite::memory:` is a private database per connection that vanishes with it, so
///   the pool holds exactly one connection and never recycles it.
/// - PostgreSQL sessions of this pool skip the outbox trigger's `NOTIFY`
///   ([`NOTIFY_SETTING`](cache_service::coherence::NOTIFY_SETTING)): the service
///   invalidates inline after each commit, and a notifying commit holds PostgreSQL's
///   notify lock through its WAL flush, serializing concurrent writers. Other writers
///   (`psql`, an admin tool) still wake the relays.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url);
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5));
    if url.starts_with("sqlite:") {
        if url.contains(":memory:") || url.contains("mode=memory") {
            options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5))
        });
    } else {
        let quiet = [(cache_service::coherence::NOTIFY_SETTING, "off")];
        options.map_sqlx_postgres_opts(move |o| o.options(quiet));
    }
    Database::connect(options).await
}

/// Applies the migrations not applied yet: the coherence tables (shared with any other
/// user of the database, created only if missing), `orders`, and its triggers.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            cache_service::coherence::tables_migration(),
            Box::new(CreateOrders),
            ORDERS_TABLE.migration("m20261129_000003_orders_outbox_triggers"),
            // The triggers again, now with the customer of each change (for databases
            // migrated before the pages were scoped by customer).
            ORDERS_TABLE.migration("m20261129_000004_orders_customer_scopes"),
        ]
    }

    /// Not sea-orm's default table: another application's migrations may be recorded
    /// there (`product-service`'s, on a shared database), and sea-orm refuses to run
    /// when it finds applied migrations it does not know.
    fn migration_table_name() -> DynIden {
        Alias::new("orders_example_migrations").into_iden()
    }
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    Id,
    CustomerId,
    TotalCents,
    Status,
    Version,
}

struct CreateOrders;

impl MigrationName for CreateOrders {
    fn name(&self) -> &str {
        "m20261129_000002_create_orders"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateOrders {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Orders::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Orders::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Orders::CustomerId).big_integer().not_null())
                    .col(ColumnDef::new(Orders::TotalCents).big_integer().not_null())
                    .col(ColumnDef::new(Orders::Status).text().not_null())
                    // The outbox triggers rely on it: starts at 1, grows on every change.
                    .col(
                        ColumnDef::new(Orders::Version)
                            .big_integer()
                            .not_null()
                            .default(1),
                    )
                    .to_owned(),
            )
            .await?;
        // A customer's pages are read by customer, in id order.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_orders_customer_id")
                    .table(Orders::Table)
                    .col(Orders::CustomerId)
                    .col(Orders::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Orders::Table).to_owned())
            .await
    }
}

/// The sea-orm entity: its `ActiveModel` is the write side, so it stays inside the crate
/// and [`OrderService`](crate::OrderService) is the only write path through this
/// crate's types.
pub(crate) mod order {
    use sea_orm::entity::prelude::*;

    use crate::domain::OrderStatus;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub customer_id: i64,
        pub total_cents: i64,
        pub status: OrderStatus,
        pub version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
