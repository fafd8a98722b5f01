//! [`OutboxTable`]: the triggers that fill the outbox for one table, and the migration
//! that installs them.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

use super::{CHANNEL, NOTIFY_SETTING, execute, migration_error, unsupported};
use crate::error::{CacheError, Result};
use crate::key::{Group, Namespace};

/// A table whose rows are cached under `namespace` (by id), in `groups` (derived
/// values such as list pages) and in scopes of `scoped_groups` (list pages filtered by a
/// column). Its triggers record every change in the outbox.
///
/// Names are SQL identifiers: lower-case ASCII letters, digits and `_`. The scoped groups
/// of one table share one column (the outbox records one value before and one after).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::{Group, Namespace, OutboxTable};
/// use sea_orm::DbBackend;
///
/// const ORDER: Namespace = Namespace::new("order");
/// const ORDER_PAGE: Group = Group::new("order_page");
/// const ORDERS: OutboxTable = OutboxTable {
///     table: "orders",
///     id_column: "id",
///     version_column: "version",
///     namespace: ORDER,
///     groups: &[ORDER_PAGE],
///     scoped_groups: &[],
/// };
/// let sql = ORDERS.install_statements(DbBackend::Postgres)?;
/// assert!(sql.iter().any(|s| s.contains("CREATE TRIGGER orders_owe_invalidation")));
/// // Names are spelled into SQL as they are, so only plain identifiers are accepted.
/// let bad = OutboxTable { table: "orders; DROP TABLE x", ..ORDERS };
/// assert!(bad.install_statements(DbBackend::Sqlite).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxTable {
    /// The table's name.
    pub table: &'static str,
    /// Its integer primary key; also the id of the cache key.
    pub id_column: &'static str,
    /// Its integer version column: starts at 1, grows on every change.
    pub version_column: &'static str,
    /// The cache namespace of one row.
    pub namespace: Namespace,
    /// The groups every change of a row invalidates.
    pub groups: &'static [Group],
    /// The groups whose scopes a change of a row invalidates: the scopes of the row's
    /// value of the column before and after the change.
    pub scoped_groups: &'static [ScopedGroup],
}

/// A group whose members are kept per value of a column (see
/// [`Scope`](crate::Scope)): a change of a row moves the scopes of the column's value
/// before and after it (both, when the row moved from one to the other), and leaves the
/// other scopes cached.
///
/// The value is the column's as text, as the database casts it (`::text`, `CAST(… AS
/// TEXT)`): text and integer columns read the same on PostgreSQL and SQLite, and a read
/// names its scope with that same text (`group.scope(value)`). A `NULL` value is in no
/// scope.
///
/// # Examples
///
/// ```
/// # fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::{Group, Namespace, OutboxTable, ScopedGroup};
/// use sea_orm::DbBackend;
///
/// const ORDER: Namespace = Namespace::new("order");
/// const ORDER_PAGE: Group = Group::new("order_page");
/// // A customer's pages move only with that customer's orders.
/// const ORDERS: OutboxTable = OutboxTable {
///     table: "orders",
///     id_column: "id",
///     version_column: "version",
///     namespace: ORDER,
///     groups: &[],
///     scoped_groups: &[ScopedGroup { group: ORDER_PAGE, column: "customer_id" }],
/// };
/// let sql = ORDERS.install_statements(DbBackend::Sqlite)?.join("\n");
/// assert!(sql.contains("CAST(OLD.customer_id AS TEXT)"));
/// // A read names the scope with the same text: `ORDER_PAGE.scope(customer_id)`.
/// assert_eq!(ORDER_PAGE.scope(42_i64).value(), Some("42"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopedGroup {
    /// The group.
    pub group: Group,
    /// The column whose value names the scope.
    pub column: &'static str,
}

impl OutboxTable {
    /// Fails unless every name is a plain SQL identifier, so it can be spelled into SQL
    /// as it is.
    pub(crate) fn check(&self) -> Result<()> {
        let names = [self.table, self.id_column, self.version_column];
        let columns = self.scoped_groups.iter().map(|scoped| scoped.column);
        for name in names.into_iter().chain(columns) {
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(CacheError::Config(format!(
                    "outbox table: {name:?} must be [a-z0-9_]+"
                )));
            }
        }
        if let Some(other) = self
            .scoped_groups
            .iter()
            .find(|scoped| Some(scoped.column) != self.scope_column())
        {
            return Err(CacheError::Config(format!(
                "outbox table {}: scoped_groups: {:?} is not {:?}: a table's scoped groups \
                 share one column",
                self.table,
                other.column,
                self.scope_column().unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// The column the scoped groups are kept by, if the table has any.
    pub(crate) fn scope_column(&self) -> Option<&'static str> {
        self.scoped_groups.first().map(|scoped| scoped.column)
    }

    /// The statements that install (or replace) this table's triggers.
    ///
    /// What they guarantee, for every writer:
    /// - `version` never goes back: an `UPDATE` that leaves it alone or lowers it (a
    ///   restored row) gets `old + 1`, so fences and replays stay sound;
    /// - an insert (also SQLite's `INSERT OR REPLACE`) owes "created" (recorded as `-v`):
    ///   whatever is cached under the id is removed, since it may come from an earlier
    ///   incarnation with a higher version;
    /// - a delete owes `old + 1`; an `UPDATE … SET id = …` owes both: the old id as
    ///   deleted and the new one as inserted;
    /// - with scoped groups, each row also records the scope column's value before
    ///   (`old_scope`) and after (`new_scope`) the change.
    pub fn install_statements(&self, backend: DbBackend) -> Result<Vec<String>> {
        self.check()?;
        let (t, i, v, ns) = (
            self.table,
            self.id_column,
            self.version_column,
            self.namespace.name(),
        );
        // The scope column's value on one side (`OLD` or `NEW`) as text; `NULL` for the
        // side a change does not have.
        let scope = |side: Option<&str>| match (self.scope_column(), side, backend) {
            (Some(c), Some(side), DbBackend::Postgres) => format!("{side}.{c}::text"),
            (Some(c), Some(side), _) => format!("CAST({side}.{c} AS TEXT)"),
            _ => "NULL".to_owned(),
        };
        // One outbox row: `id` at `version`, with the scope before and after.
        let owe = |id: &str, version: &str, old: Option<&str>, new: Option<&str>| {
            if self.scope_column().is_none() {
                return format!(
                    "INSERT INTO cache_outbox (namespace, entity_id, version) VALUES ('{ns}', {id}, {version});"
                );
            }
            format!(
                "INSERT INTO cache_outbox (namespace, entity_id, version, old_scope, new_scope) \
                 VALUES ('{ns}', {id}, {version}, {}, {});",
                scope(old),
                scope(new)
            )
        };
        let deleted = owe(
            &format!("OLD.{i}"),
            &format!("OLD.{v} + 1"),
            Some("OLD"),
            None,
        );
        let inserted = owe(&format!("NEW.{i}"), &format!("-NEW.{v}"), None, Some("NEW"));
        let updated = owe(
            &format!("NEW.{i}"),
            &format!("NEW.{v}"),
            Some("OLD"),
            Some("NEW"),
        );
        match backend {
            DbBackend::Postgres => Ok(vec![
                format!(
                    "CREATE OR REPLACE FUNCTION {t}_bump_version() RETURNS trigger AS $$
                    BEGIN
                        IF NEW IS DISTINCT FROM OLD AND NEW.{v} <= OLD.{v} THEN
                            NEW.{v} := OLD.{v} + 1;
                        END IF;
                        RETURN NEW;
                    END $$ LANGUAGE plpgsql"
                ),
                format!("DROP TRIGGER IF EXISTS {t}_bump_version ON {t}"),
                format!(
                    "CREATE TRIGGER {t}_bump_version BEFORE UPDATE ON {t}
                        FOR EACH ROW EXECUTE FUNCTION {t}_bump_version()"
                ),
                format!(
                    "CREATE OR REPLACE FUNCTION {t}_owe_invalidation() RETURNS trigger AS $$
                    BEGIN
                        IF TG_OP = 'DELETE' THEN
                            {delete}
                        ELSIF TG_OP = 'INSERT' THEN
                            {insert}
                        ELSIF NEW.{i} <> OLD.{i} THEN
                            {delete}
                            {insert}
                        ELSIF NEW.{v} <> OLD.{v} THEN
                            {update}
                        END IF;
                        IF current_setting('{NOTIFY_SETTING}', true) IS DISTINCT FROM 'off' THEN
                            PERFORM pg_notify('{CHANNEL}', '');
                        END IF;
                        RETURN NULL;
                    END $$ LANGUAGE plpgsql",
                    delete = deleted,
                    insert = inserted,
                    update = updated,
                ),
                format!("DROP TRIGGER IF EXISTS {t}_owe_invalidation ON {t}"),
                format!(
                    "CREATE TRIGGER {t}_owe_invalidation AFTER INSERT OR UPDATE OR DELETE ON {t}
                        FOR EACH ROW EXECUTE FUNCTION {t}_owe_invalidation()"
                ),
            ]),
            // SQLite triggers cannot change `NEW`: an UPDATE that did not raise the version
            // is followed by a second one that does (a trigger never fires while it is
            // already running, so this cannot recurse), and only a raised version owes
            // an invalidation. The second UPDATE's `OLD` is the first one's `NEW`, so the
            // scope the row had before the first one is recorded here, by the trigger
            // that sees it.
            DbBackend::Sqlite => {
                let bumped = match self.scope_column() {
                    Some(_) => owe(
                        &format!("NEW.{i}"),
                        &format!("OLD.{v} + 1"),
                        Some("OLD"),
                        Some("NEW"),
                    ),
                    None => String::new(),
                };
                let mut statements = self.uninstall_statements(backend)?;
                statements.extend([
                    format!(
                        "CREATE TRIGGER {t}_bump_version AFTER UPDATE ON {t}
                            WHEN NEW.{v} <= OLD.{v}
                            BEGIN
                                UPDATE {t} SET {v} = OLD.{v} + 1 WHERE {i} = NEW.{i};
                                {bumped}
                            END"
                    ),
                    format!(
                        "CREATE TRIGGER {t}_owe_insert AFTER INSERT ON {t}
                            BEGIN {inserted} END"
                    ),
                    format!(
                        "CREATE TRIGGER {t}_owe_update AFTER UPDATE ON {t}
                            WHEN NEW.{v} > OLD.{v} AND NEW.{i} = OLD.{i}
                            BEGIN {updated} END"
                    ),
                    format!(
                        "CREATE TRIGGER {t}_owe_rekey AFTER UPDATE ON {t}
                            WHEN NEW.{i} <> OLD.{i}
                            BEGIN {deleted} {inserted} END"
                    ),
                    format!(
                        "CREATE TRIGGER {t}_owe_delete AFTER DELETE ON {t}
                            BEGIN {deleted} END"
                    ),
                ]);
                Ok(statements)
            }
            other => Err(unsupported(other)),
        }
    }

    /// The statements that remove this table's triggers.
    pub fn uninstall_statements(&self, backend: DbBackend) -> Result<Vec<String>> {
        self.check()?;
        let t = self.table;
        match backend {
            DbBackend::Postgres => Ok(vec![
                format!("DROP TRIGGER IF EXISTS {t}_owe_invalidation ON {t}"),
                format!("DROP TRIGGER IF EXISTS {t}_bump_version ON {t}"),
                format!("DROP FUNCTION IF EXISTS {t}_owe_invalidation()"),
                format!("DROP FUNCTION IF EXISTS {t}_bump_version()"),
            ]),
            DbBackend::Sqlite => Ok([
                "bump_version",
                "owe_insert",
                "owe_update",
                "owe_rekey",
                "owe_delete",
            ]
            .iter()
            .map(|name| format!("DROP TRIGGER IF EXISTS {t}_{name}"))
            .collect()),
            other => Err(unsupported(other)),
        }
    }

    /// A migration that installs this table's triggers (after the coherence tables and
    /// the table itself exist), named `name`. For a table with scoped groups it first
    /// adds the outbox's `old_scope` and `new_scope` columns, where they are missing, in
    /// the same transaction. Installing is re-runnable: a table that gains scoped groups
    /// adds a migration of a new name, which replaces the triggers.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::*;
    /// # use sea_orm::{ConnectionTrait, Database};
    /// # use sea_orm_migration::{MigrationTrait, SchemaManager};
    /// # const NOTE: Namespace = Namespace::new("note");
    /// # const NOTES: OutboxTable = OutboxTable {
    /// #     table: "notes", id_column: "id", version_column: "version", namespace: NOTE, groups: &[], scoped_groups: &[],
    /// # };
    /// # let db = Database::connect("sqlite::memory:").await?;
    /// # db.execute_unprepared(
    /// #     "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1)",
    /// # ).await?;
    /// # let manager = SchemaManager::new(&db);
    /// # coherence::tables_migration().up(&manager).await?;
    /// # NOTES.migration("m_notes_outbox").up(&manager).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let coherence = Coherence::new(db.clone(), cache, &[NOTES], CoherenceConfig::default()).await?;
    /// // In a sea-orm migrator: the coherence tables first, then the table, then its triggers.
    /// let migrations = vec![
    ///     cache_service::coherence::tables_migration(),
    ///     // Box::new(CreateNotes),
    ///     NOTES.migration("m20260101_000002_notes_outbox"),
    /// ];
    /// # drop(migrations);
    /// # Ok(())
    /// # }
    /// ```
    pub fn migration(&self, name: &'static str) -> Box<dyn MigrationTrait> {
        Box::new(InstallTriggers { table: *self, name })
    }
}

/// The outbox columns of a row's scope before and after the change.
pub(crate) const SCOPE_COLUMNS: [&str; 2] = ["old_scope", "new_scope"];

struct InstallTriggers {
    table: OutboxTable,
    name: &'static str,
}

impl MigrationName for InstallTriggers {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for InstallTriggers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let mut statements = Vec::new();
        if self.table.scope_column().is_some() {
            for column in SCOPE_COLUMNS {
                if !manager.has_column("cache_outbox", column).await? {
                    statements.push(format!("ALTER TABLE cache_outbox ADD COLUMN {column} TEXT"));
                }
            }
        }
        statements.extend(
            self.table
                .install_statements(backend)
                .map_err(migration_error)?,
        );
        execute(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        execute(
            manager,
            &self
                .table
                .uninstall_statements(backend)
                .map_err(migration_error)?,
        )
        .await
    }
}
