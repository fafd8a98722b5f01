//! The per-connection settings the coherence component relies on: the connect options
//! that give them to every connection of a pool ([`connect_options`]), and the check on
//! a connection the caller built.
//!
//! Why a check and not a fix: they are session settings, so they must hold on every
//! connection of the pool, including the ones it opens later. Only the pool's own
//! options (sea-orm's `ConnectOptions`, given before the pool exists) reach those; a
//! `SET` or `PRAGMA` sent through a finished [`DatabaseConnection`] lands on whichever
//! pooled connection runs it. So a component handed a connection looks at one of its
//! sessions and refuses to start without them, naming what is missing; the pool's
//! connections are all opened with the same options, so one stands for all.

use std::fmt;
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::error::{CacheError, Result};

use super::NOTIFY_SETTING;

/// A session setting the coherence component needs, and that a connection lacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionSetting {
    /// SQLite file: `journal_mode = WAL`, so readers do not block the writer (the relay
    /// and the acknowledgement wait read the outbox while writers commit).
    SqliteWal,
    /// SQLite: a `busy_timeout` above 0, so a writer that finds the database locked
    /// waits its turn instead of failing at once with "database is locked".
    SqliteBusyTimeout,
    /// PostgreSQL: [`NOTIFY_SETTING`] `= off` for the sessions of a process that
    /// invalidates inline after each commit: a notifying commit holds PostgreSQL's
    /// notify lock through its WAL flush and serializes concurrent writers.
    PostgresQuietNotify,
}

impl SessionSetting {
    /// `settings` on one line, for error messages.
    pub fn list(settings: &[Self]) -> String {
        settings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for SessionSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SqliteWal => f.write_str("SQLite journal_mode=WAL"),
            Self::SqliteBusyTimeout => f.write_str("SQLite busy_timeout > 0"),
            Self::PostgresQuietNotify => write!(f, "PostgreSQL {NOTIFY_SETTING}=off"),
        }
    }
}

/// sea-orm connect options for `url` (`sqlite://…`, `sqlite::memory:` or `postgres://…`)
/// under which every connection of the pool has the [`SessionSetting`]s, with
/// `pool_size` connections at most (`None`: sqlx's default).
///
/// - An SQLite file gets WAL and a 5 s busy timeout: readers do not block the writer,
///   and writers queue instead of failing.
/// - `sqlite::memory:` is a private database per connection that vanishes with it, so
///   the pool holds exactly one connection and never recycles it (`pool_size` aside).
/// - PostgreSQL sessions skip the outbox trigger's `NOTIFY` ([`NOTIFY_SETTING`]) for a
///   process that invalidates inline after each commit (as a service over
///   [`Coherence::after_commit`](super::Coherence::after_commit) does); other writers
///   (`psql`, an admin tool) still wake the relays.
/// - Connecting and acquiring a connection give up after 5 s; statements are not
///   logged.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::coherence::{check_session, connect_options};
///
/// let db = sea_orm::Database::connect(connect_options("sqlite::memory:", None)).await?;
/// check_session(&db).await?;
/// # Ok(())
/// # }
/// ```
pub fn connect_options(url: &str, pool_size: Option<u32>) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5));
    if url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory")) {
        options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    } else if let Some(size) = pool_size {
        options.max_connections(size);
    }
    if url.starts_with("sqlite:") {
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5))
        });
    } else {
        options.map_sqlx_postgres_opts(|o| o.options([(NOTIFY_SETTING, "off")]));
    }
    options
}

/// The settings among [`SessionSetting`] that a session of `db` lacks (none for a
/// backend the component does not support: it fails later, naming the backend).
///
/// An in-memory SQLite database cannot use WAL, and needs none (one connection).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::coherence::{SessionSetting, missing_settings};
/// use sea_orm::{ConnectOptions, Database};
///
/// let dir = std::env::temp_dir().join(format!("session-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let url = format!("sqlite://{}?mode=rwc", dir.join("plain.db").display());
/// // A plain pool: SQLite's default journal, no busy timeout.
/// let mut options = ConnectOptions::new(url);
/// options.map_sqlx_sqlite_opts(|o| o.busy_timeout(std::time::Duration::ZERO));
/// let db = Database::connect(options).await?;
/// assert_eq!(
///     missing_settings(&db).await?,
///     vec![SessionSetting::SqliteBusyTimeout, SessionSetting::SqliteWal]
/// );
/// # db.close().await?;
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub async fn missing_settings(db: &DatabaseConnection) -> Result<Vec<SessionSetting>> {
    let backend = db.get_database_backend();
    let mut missing = Vec::new();
    match backend {
        DbBackend::Sqlite => {
            let busy_timeout: i64 = scalar(db, "PRAGMA busy_timeout").await?.unwrap_or(0);
            if busy_timeout <= 0 {
                missing.push(SessionSetting::SqliteBusyTimeout);
            }
            let file: String = scalar(
                db,
                "SELECT file FROM pragma_database_list WHERE name = 'main'",
            )
            .await?
            .unwrap_or_default();
            let journal: String = scalar(db, "PRAGMA journal_mode").await?.unwrap_or_default();
            if !file.is_empty() && !journal.eq_ignore_ascii_case("wal") {
                missing.push(SessionSetting::SqliteWal);
            }
        }
        DbBackend::Postgres => {
            let notify: Option<String> = scalar(
                db,
                &format!("SELECT current_setting('{NOTIFY_SETTING}', true)"),
            )
            .await?;
            if notify.as_deref() != Some("off") {
                missing.push(SessionSetting::PostgresQuietNotify);
            }
        }
        _ => {}
    }
    Ok(missing)
}

/// Fails with [`CacheError::MissingSessionSettings`] when a session of `db` lacks any
/// of the settings the coherence component needs (see [`missing_settings`]).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use cache_service::coherence::check_session;
///
/// // `sqlite::memory:` needs no WAL, and sqlx gives every pool a busy timeout.
/// let db = sea_orm::Database::connect("sqlite::memory:").await?;
/// check_session(&db).await?;
/// # Ok(())
/// # }
/// ```
pub async fn check_session(db: &DatabaseConnection) -> Result<()> {
    let missing = missing_settings(db).await?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CacheError::MissingSessionSettings(missing))
    }
}

/// The first column of the first row of `sql`, if there is one and it is not NULL.
async fn scalar<T: sea_orm::TryGetable>(db: &DatabaseConnection, sql: &str) -> Result<Option<T>> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?;
    Ok(match row {
        Some(row) => row.try_get_by_index::<Option<T>>(0)?,
        None => None,
    })
}
