//! Configuration: one clap derive, matching README's configuration table row for row.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Product catalogue API: a REST server whose reads are cached in Redis (or in memory)
/// and whose every write invalidates exactly what it made stale.
#[derive(Debug, Parser)]
#[command(name = "api-server", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub settings: Settings,
}

/// Subcommands of the one binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations if needed, then serve HTTP (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Upsert products by sku from a CSV or JSON Lines file.
    ///
    /// Every change goes through ProductService, so it reaches the cache at once, as an
    /// HTTP write would.
    ///
    /// FORMAT: `.jsonl` files are JSON Lines, any other name is CSV.
    ///
    ///   CSV         a header row names the columns, in any order, e.g.
    ///                 sku,name,description,price_cents,stock,category
    ///                 KB-001,Mechanical keyboard,,8999,12,keyboards
    ///               An unknown column stops the import before anything is written.
    ///               An empty cell keeps the product's current value.
    ///   JSON Lines  one object per line, e.g.
    ///                 {"sku":"KB-001","price_cents":7999}
    ///               An unknown key fails that line. An absent key (or null) keeps the
    ///               current value; "" sets a text field to empty.
    ///
    /// FIELDS (the API's rules):
    ///   sku          required; 1-64 characters of A-Z a-z 0-9 - _ .
    ///   name         1-200 characters after trimming          required to create
    ///   price_cents  integer, 0 to 1000000000000 (10^12)      required to create
    ///   stock        integer, 0 to 1000000000 (10^9)          required to create
    ///   description  0-10000 characters                       default ""
    ///   category     0-100 characters                         default ""
    ///
    /// A row whose sku exists updates only the fields it gives (unchanged if they
    /// already hold those values); a new sku creates a product. A bad row is reported
    /// on stderr as `line N: field: reason` (N is the line in the file; the CSV header
    /// is line 1) and skipped; the valid rows are still applied, 500 per transaction.
    ///
    /// OUTPUT: a progress bar on a terminal (otherwise a progress line on stderr every
    /// 10000 rows), then on stdout:
    ///   created N, updated N, unchanged N, failed N
    /// Exit status 0 only if no row failed.
    ///
    /// Uses the server's settings (DATABASE_URL, REDIS_URL, CACHE_PREFIX), so a running
    /// server sees the changes at once.
    #[command(verbatim_doc_comment)]
    Import {
        /// The CSV (header row) or JSON Lines (`.jsonl`) file to import.
        file: PathBuf,
        /// Validate every row and print the summary, but write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Settings, from flags or environment variables (flags win).
#[derive(Clone, Args)]
pub struct Settings {
    /// Listen address.
    #[arg(long, env = "BIND", default_value = DEFAULT_BIND, global = true)]
    pub bind: SocketAddr,

    /// Database URL: `sqlite://FILE?mode=rwc` (embedded, zero set-up) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        global = true
    )]
    pub database_url: String,

    /// Redis URL (`redis://`, `rediss://`, `redis-cluster://`, `redis-sentinel://`).
    /// Unset: an in-process memory cache.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// Prefix of every cache key (`{prefix}:…`).
    #[arg(long, env = "CACHE_PREFIX", default_value = DEFAULT_CACHE_PREFIX, global = true)]
    pub cache_prefix: String,

    /// Lifetime of cached entries, in seconds (before ±10% jitter).
    #[arg(
        long,
        env = "CACHE_TTL_SECS",
        default_value_t = DEFAULT_CACHE_TTL_SECS,
        value_parser = clap::value_parser!(u64).range(1..=31_536_000),
        global = true
    )]
    pub cache_ttl_secs: u64,

    /// Entries the in-process cache holds at most (without `REDIS_URL`); beyond it,
    /// expired entries go first, then arbitrary ones.
    #[arg(
        long,
        env = "CACHE_MAX_ENTRIES",
        default_value_t = DEFAULT_CACHE_MAX_ENTRIES,
        value_parser = clap::value_parser!(u64).range(1..=100_000_000),
        global = true
    )]
    pub cache_max_entries: u64,

    /// Bearer token required by writes. Unset: a random token is generated and printed
    /// once at start-up.
    #[arg(long, env = "API_TOKEN", hide_env_values = true, global = true)]
    pub api_token: Option<String>,

    /// Log format on stderr: `text` (for people) or `json` (one object per line, for a
    /// log collector).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Connections in the Redis pool.
    #[arg(
        long,
        env = "REDIS_POOL_SIZE",
        default_value_t = DEFAULT_REDIS_POOL_SIZE,
        value_parser = clap::value_parser!(u16).range(1..=256),
        global = true
    )]
    pub redis_pool_size: u16,

    /// Milliseconds after which a Redis command gives up (reads then go to the database).
    #[arg(
        long,
        env = "REDIS_COMMAND_TIMEOUT_MS",
        default_value_t = DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
        value_parser = clap::value_parser!(u64).range(1..=60_000),
        global = true
    )]
    pub redis_command_timeout_ms: u64,

    /// Longest pause, in milliseconds, between attempts to reconnect to Redis.
    #[arg(
        long,
        env = "REDIS_RECONNECT_MAX_MS",
        default_value_t = DEFAULT_REDIS_RECONNECT_MAX_MS,
        value_parser = clap::value_parser!(u64).range(10..=60_000),
        global = true
    )]
    pub redis_reconnect_max_ms: u64,

    /// For `rediss://`: a PEM file of the certificate authorities that sign Redis's
    /// certificate (a private CA). Unset: the system's trusted roots.
    #[arg(long, env = "REDIS_TLS_CA_FILE", global = true)]
    pub redis_tls_ca_file: Option<PathBuf>,

    /// With Redis: `strict` keeps an in-process copy of what was read (the near cache),
    /// kept coherent by Redis's client tracking and served only after a round trip that
    /// proves every earlier write's invalidation arrived; `bounded` serves the copy at
    /// once while the newest such round trip began at most `CACHE_L1_BOUND_MS` earlier;
    /// `off` asks Redis on every read. Without Redis the in-process cache is the only
    /// one, and this is ignored.
    #[arg(long, env = "CACHE_L1", value_enum, default_value_t = L1Mode::Strict, global = true)]
    pub cache_l1: L1Mode,

    /// Mebibytes the near cache holds at most (keys and values).
    #[arg(
        long,
        env = "CACHE_L1_MAX_MB",
        default_value_t = DEFAULT_CACHE_L1_MAX_MB,
        value_parser = clap::value_parser!(u64).range(1..=65_536),
        global = true
    )]
    pub cache_l1_max_mb: u64,

    /// With `CACHE_L1=bounded`: the staleness bound in milliseconds. A read reflects every
    /// write (from any server) that returned at least this long before it began, and
    /// every write of this server.
    #[arg(
        long,
        env = "CACHE_L1_BOUND_MS",
        default_value_t = DEFAULT_CACHE_L1_BOUND_MS,
        value_parser = clap::value_parser!(u64).range(1..=60_000),
        global = true
    )]
    pub cache_l1_bound_ms: u64,

    /// Connections in the database pool. Unset: 8 for an SQLite file, 16 for PostgreSQL.
    #[arg(
        long,
        env = "DATABASE_POOL_SIZE",
        value_parser = clap::value_parser!(u32).range(1..=1_000),
        global = true
    )]
    pub database_pool_size: Option<u32>,

    /// Milliseconds a write whose invalidation could not be applied at once waits for
    /// some server's relay to apply it, before it returns anyway.
    #[arg(
        long,
        env = "CACHE_ACK_TIMEOUT_MS",
        default_value_t = DEFAULT_CACHE_ACK_TIMEOUT_MS,
        value_parser = clap::value_parser!(u64).range(0..=60_000),
        global = true
    )]
    pub cache_ack_timeout_ms: u64,

    /// Milliseconds between passes of the invalidation auditor, which samples 100 rows
    /// per pass, compares each with its cached entry, and counts (and logs) entries
    /// older than their row that nothing will remove. It only reads. 0 turns it off.
    #[arg(
        long,
        env = "CACHE_AUDIT_INTERVAL_MS",
        default_value_t = DEFAULT_CACHE_AUDIT_INTERVAL_MS,
        value_parser = clap::value_parser!(u64).range(0..=86_400_000),
        global = true
    )]
    pub cache_audit_interval_ms: u64,

    /// Seconds in-flight requests get to finish after SIGINT or SIGTERM.
    #[arg(
        long,
        env = "SHUTDOWN_GRACE_SECS",
        default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS,
        value_parser = clap::value_parser!(u64).range(0..=3_600),
        global = true
    )]
    pub shutdown_grace_secs: u64,
}

const DEFAULT_BIND: &str = "127.0.0.1:8080";
const DEFAULT_DATABASE_URL: &str = "sqlite://products.db?mode=rwc";
const DEFAULT_CACHE_PREFIX: &str = "products";
const DEFAULT_CACHE_TTL_SECS: u64 = 300;
const DEFAULT_CACHE_MAX_ENTRIES: u64 = 100_000;
const DEFAULT_REDIS_POOL_SIZE: u16 = 4;
const DEFAULT_REDIS_COMMAND_TIMEOUT_MS: u64 = 250;
const DEFAULT_REDIS_RECONNECT_MAX_MS: u64 = 200;
const DEFAULT_CACHE_ACK_TIMEOUT_MS: u64 = 1_000;
/// A pass a minute: 100 indexed `SELECT`s and 100 `GET`s, nothing a server notices, and
/// a stale entry is reported within minutes of its appearance.
const DEFAULT_CACHE_AUDIT_INTERVAL_MS: u64 = 60_000;
const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
const DEFAULT_CACHE_L1_MAX_MB: u64 = 64;
const DEFAULT_CACHE_L1_BOUND_MS: u64 = 10;

/// Whether a server with Redis keeps a near cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum L1Mode {
    /// A near cache served only past a tracking barrier: never staler than Redis.
    Strict,
    /// A near cache served at once while its newest barrier is at most
    /// `CACHE_L1_BOUND_MS` old: staler than Redis by at most that bound.
    Bounded,
    /// No near cache.
    Off,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The defaults of every setting (what an empty command line without environment gives).
impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            redis_url: None,
            cache_prefix: DEFAULT_CACHE_PREFIX.to_owned(),
            cache_ttl_secs: DEFAULT_CACHE_TTL_SECS,
            cache_max_entries: DEFAULT_CACHE_MAX_ENTRIES,
            api_token: None,
            log_format: LogFormat::Text,
            redis_pool_size: DEFAULT_REDIS_POOL_SIZE,
            redis_command_timeout_ms: DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
            redis_reconnect_max_ms: DEFAULT_REDIS_RECONNECT_MAX_MS,
            redis_tls_ca_file: None,
            cache_l1: L1Mode::Strict,
            cache_l1_max_mb: DEFAULT_CACHE_L1_MAX_MB,
            cache_l1_bound_ms: DEFAULT_CACHE_L1_BOUND_MS,
            database_pool_size: None,
            cache_ack_timeout_ms: DEFAULT_CACHE_ACK_TIMEOUT_MS,
            cache_audit_interval_ms: DEFAULT_CACHE_AUDIT_INTERVAL_MS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
        }
    }
}

/// The environment variables the settings read, from the command-line definition (so a
/// list of them cannot drift from it).
pub fn setting_variables() -> Vec<String> {
    use clap::CommandFactory;
    Cli::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

impl Settings {
    /// The Redis URL, treating an empty value as unset.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis_url.as_deref().filter(|u| !u.trim().is_empty())
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field("database_url", &redact_url(&self.database_url))
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("cache_prefix", &self.cache_prefix)
            .field("cache_ttl_secs", &self.cache_ttl_secs)
            .field("cache_max_entries", &self.cache_max_entries)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("log_format", &self.log_format)
            .field("redis_pool_size", &self.redis_pool_size)
            .field("redis_command_timeout_ms", &self.redis_command_timeout_ms)
            .field("redis_reconnect_max_ms", &self.redis_reconnect_max_ms)
            .field("redis_tls_ca_file", &self.redis_tls_ca_file)
            .field("cache_l1", &self.cache_l1)
            .field("cache_l1_max_mb", &self.cache_l1_max_mb)
            .field("database_pool_size", &self.database_pool_size)
            .field("cache_ack_timeout_ms", &self.cache_ack_timeout_ms)
            .field("cache_audit_interval_ms", &self.cache_audit_interval_ms)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .finish()
    }
}

/// A URL with its password replaced, for logs.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let cli = Cli::parse_from([
            "api-server",
            "--api-token",
            "s3cret-token",
            "--database-url",
            "postgres://app:pw123@db/app",
        ]);
        let shown = format!("{:?}", cli.settings);
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(!shown.contains("pw123"), "{shown}");
    }

    #[test]
    fn the_near_cache_staleness_bound_is_configurable_and_checked() {
        let cli = Cli::parse_from([
            "api-server",
            "--cache-l1",
            "bounded",
            "--cache-l1-bound-ms",
            "25",
        ]);
        assert_eq!(cli.settings.cache_l1, L1Mode::Bounded);
        assert_eq!(cli.settings.cache_l1_bound_ms, 25);
        let error = Cli::try_parse_from(["api-server", "--cache-l1-bound-ms", "0"])
            .expect_err("a bound of 0 is refused");
        assert!(error.to_string().contains("--cache-l1-bound-ms"), "{error}");
    }

    #[test]
    fn the_in_process_cache_bound_is_configurable_and_checked() {
        let cli = Cli::parse_from(["api-server", "--cache-max-entries", "5000"]);
        assert_eq!(cli.settings.cache_max_entries, 5000);
        let error = Cli::try_parse_from(["api-server", "--cache-max-entries", "0"])
            .expect_err("a bound of 0 is refused");
        assert!(error.to_string().contains("--cache-max-entries"), "{error}");
    }

    #[test]
    fn the_defaults_are_what_an_empty_command_line_gives() {
        let parsed = Cli::parse_from(["api-server"]).settings;
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Settings::default()));
    }

    #[test]
    fn operations_settings_parse_and_are_checked() {
        let cli = Cli::parse_from([
            "api-server",
            "--log-format",
            "json",
            "--redis-pool-size",
            "8",
            "--redis-command-timeout-ms",
            "500",
            "--database-pool-size",
            "32",
            "--cache-ack-timeout-ms",
            "0",
            "--cache-audit-interval-ms",
            "0",
            "--shutdown-grace-secs",
            "30",
        ]);
        let s = cli.settings;
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(
            (
                s.redis_pool_size,
                s.redis_command_timeout_ms,
                s.database_pool_size
            ),
            (8, 500, Some(32))
        );
        assert_eq!((s.cache_ack_timeout_ms, s.shutdown_grace_secs), (0, 30));
        assert_eq!(s.cache_audit_interval_ms, 0, "0 turns the auditor off");
        for bad in [
            ["--redis-pool-size", "0"],
            ["--redis-command-timeout-ms", "0"],
            ["--log-format", "xml"],
        ] {
            let error =
                Cli::try_parse_from(["api-server", bad[0], bad[1]]).expect_err("out of range");
            assert!(error.to_string().contains(bad[0]), "{error}");
        }
    }

    #[test]
    fn every_setting_has_an_environment_variable() {
        let names = setting_variables();
        for name in [
            "BIND",
            "DATABASE_URL",
            "REDIS_URL",
            "LOG_FORMAT",
            "SHUTDOWN_GRACE_SECS",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    }

    #[test]
    fn flags_default_as_the_contract_says() {
        let cli = Cli::parse_from(["api-server"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.settings.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(cli.settings.cache_prefix, "products");
        assert_eq!(cli.settings.cache_ttl_secs, 300);
        assert_eq!(cli.settings.cache_max_entries, 100_000);
    }
}
