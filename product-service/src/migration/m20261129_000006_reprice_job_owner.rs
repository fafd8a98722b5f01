use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use super::RepriceJob;

/// The owner token of a running reprice job: each claim sets a new one, and every later
/// write of the worker that claimed it is conditional on it, so a worker that was slow
/// (not dead) and lost its job to another cannot commit another batch of it.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RepriceJob::Table)
                    .add_column(string_len_null(RepriceJob::Owner, 36))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RepriceJob::Table)
                    .drop_column(RepriceJob::Owner)
                    .to_owned(),
            )
            .await
    }
}
