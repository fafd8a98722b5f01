//! Configuration: one clap derive, matching the table in `spec/API.md` row for row.

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
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080", global = true)]
    pub bind: SocketAddr,

    /// Database URL: `sqlite://FILE?mode=rwc` (embedded, zero set-up) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://products.db?mode=rwc",
        global = true
    )]
    pub database_url: String,

    /// Redis URL (`redis://`, `rediss://`, `redis-cluster://`, `redis-sentinel://`).
    /// Unset: an in-process memory cache.
    #[arg(long, env = "REDIS_URL", global = true)]
    pub redis_url: Option<String>,

    /// Prefix of every cache key (`{prefix}:…`).
    #[arg(long, env = "CACHE_PREFIX", default_value = "products", global = true)]
    pub cache_prefix: String,

    /// Lifetime of cached entries, in seconds (before ±10% jitter).
    #[arg(
        long,
        env = "CACHE_TTL_SECS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..=31_536_000),
        global = true
    )]
    pub cache_ttl_secs: u64,

    /// Entries the in-process cache holds at most (without `REDIS_URL`); beyond it,
    /// expired entries go first, then arbitrary ones.
    #[arg(
        long,
        env = "CACHE_MAX_ENTRIES",
        default_value_t = 100_000,
        value_parser = clap::value_parser!(u64).range(1..=100_000_000),
        global = true
    )]
    pub cache_max_entries: u64,

    /// Bearer token required by writes. Unset: a random token is generated and printed
    /// once at start-up.
    #[arg(long, env = "API_TOKEN", hide_env_values = true, global = true)]
    pub api_token: Option<String>,
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
    fn the_in_process_cache_bound_is_configurable_and_checked() {
        let cli = Cli::parse_from(["api-server", "--cache-max-entries", "5000"]);
        assert_eq!(cli.settings.cache_max_entries, 5000);
        let error = Cli::try_parse_from(["api-server", "--cache-max-entries", "0"])
            .expect_err("a bound of 0 is refused");
        assert!(error.to_string().contains("--cache-max-entries"), "{error}");
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
