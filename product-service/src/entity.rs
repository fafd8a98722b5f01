//! The sea-orm entity. Private to the crate: its `ActiveModel` is the write side, and
//! only [`ProductService`](crate::ProductService) may use it.

pub(crate) mod product {
    use sea_orm::entity::prelude::*;

    /// `Default` is the starting point of a new product in the import, before its
    /// fields are applied.
    #[derive(Clone, Debug, Default, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "product")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub sku: String,
        pub name: String,
        pub description: String,
        pub price_cents: i64,
        pub stock: i64,
        pub category: String,
        pub version: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// The columns a write sets from domain values, and each value, in column order: the
    /// one place a writable field maps to its column. `ProductService`'s create (with a
    /// full patch) and updates set these columns; the import applies them to its copy of
    /// each row, and its statements write the columns so changed.
    pub(crate) fn patch_columns(patch: &crate::domain::ProductPatch) -> Vec<(Column, Value)> {
        let text = |value: &dyn std::fmt::Display| Value::from(value.to_string());
        [
            (Column::Sku, patch.sku.as_ref().map(|v| text(v))),
            (Column::Name, patch.name.as_ref().map(|v| text(v))),
            (
                Column::Description,
                patch.description.as_ref().map(|v| text(v)),
            ),
            (
                Column::PriceCents,
                patch.price_cents.map(|v| Value::from(v.get())),
            ),
            (Column::Stock, patch.stock.map(|v| Value::from(v.get()))),
            (Column::Category, patch.category.as_ref().map(|v| text(v))),
        ]
        .into_iter()
        .filter_map(|(column, value)| Some((column, value?)))
        .collect()
    }
}

/// Reprice jobs (see [`jobs`](crate::jobs)).
pub(crate) mod reprice_job {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "reprice_job")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub category: Option<String>,
        pub percent: f64,
        pub status: String,
        pub matched: i64,
        pub updated: i64,
        /// The last product id processed; batches continue after it.
        pub cursor: i64,
        pub error: Option<String>,
        pub heartbeat_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        /// The token of the claim that runs the job (a UUID), set while it is running:
        /// the worker's every later write is conditional on it.
        pub owner: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
