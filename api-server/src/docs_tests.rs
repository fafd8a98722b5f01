//! README and the `import` help state the contract's numbers in prose, which cannot take
//! them from the code; these tests keep that prose equal to the constants of the domain
//! types, the import and the command line, so a rule changes in one place and a stale
//! text fails here.

use clap::CommandFactory;
use product_service::{
    Category, Description, JobConfig, PriceCents, ProductName, RepricePercent, Sku, Stock,
};

use crate::config::Cli;
use crate::import::{BATCH_SIZE, PROGRESS_LINE_EVERY};

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));

/// The README table row whose first cell is `` `key` ``.
fn readme_row(key: &str) -> &'static str {
    let cell = format!("| `{key}` |");
    README
        .lines()
        .find(|line| line.starts_with(&cell) || line.contains(&format!(" {cell}")))
        .unwrap_or_else(|| panic!("README has no table row for `{key}`"))
}

/// `10000` as prose groups it: `10 000`.
fn grouped(n: u64) -> String {
    let plain = n.to_string();
    let mut out = String::new();
    for (i, digit) in plain.chars().enumerate() {
        if i > 0 && (plain.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

/// `n` as a text may spell it: `10000`, `10 000`, or (a power of ten) `10^4`.
pub(crate) fn spellings(n: u64) -> Vec<String> {
    let plain = n.to_string();
    let mut spelled = vec![plain.clone(), grouped(n)];
    if n >= 10 && plain[1..].chars().all(|c| c == '0') && plain.starts_with('1') {
        spelled.push(format!("10^{}", plain.len() - 1));
    }
    spelled
}

#[test]
fn readmes_field_table_states_the_domain_rules() {
    let rules = [
        (Sku::FIELD, format!("1–{} characters", Sku::MAX_LEN)),
        (
            ProductName::FIELD,
            format!("1–{} characters after trimming", ProductName::MAX_LEN),
        ),
        (
            Description::FIELD,
            format!("0–{} characters", Description::MAX_LEN),
        ),
        (
            PriceCents::FIELD,
            format!("integer, {}–{}", PriceCents::MIN, PriceCents::MAX),
        ),
        (
            Stock::FIELD,
            format!("integer, {}–{}", Stock::MIN, Stock::MAX),
        ),
        (
            Category::FIELD,
            format!("0–{} characters", Category::MAX_LEN),
        ),
    ];
    for (field, rule) in rules {
        let row = readme_row(field);
        assert!(
            row.contains(&rule),
            "README's {field} row should say {rule:?}: {row}"
        );
    }
}

#[test]
fn readmes_prose_states_the_same_numbers_as_the_code() {
    let detail = PriceCents::parse(-1).map_err(|e| e.to_string());
    let statements = [
        format!("\"detail\":\"{}\"", detail.expect_err("-1 is refused")),
        format!(
            "\"percent\": {}…{}",
            RepricePercent::MIN,
            RepricePercent::MAX
        ),
        format!(
            "{} products per transaction",
            JobConfig::default().batch_size
        ),
        format!("Rows are applied {BATCH_SIZE} per transaction"),
        format!("every {} rows", grouped(PROGRESS_LINE_EVERY)),
        format!(
            "waits up to {} s for one of them",
            product_service::import::SETTLE_TIMEOUT.as_secs()
        ),
    ];
    // README wraps lines; compare with the line breaks folded.
    let readme = README.split_whitespace().collect::<Vec<_>>().join(" ");
    for statement in statements {
        assert!(
            readme.contains(&statement),
            "README should say {statement:?}"
        );
    }
}

#[test]
fn readmes_configuration_table_lists_every_setting_with_its_flag_and_default() {
    let command = Cli::command();
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let env = env.to_string_lossy();
        let row = readme_row(&env);
        let flag = format!("`--{}`", arg.get_long().unwrap_or_default());
        assert!(
            row.contains(&flag),
            "README's {env} row should name {flag}: {row}"
        );
        for default in arg.get_default_values() {
            let default = format!("`{}`", default.to_string_lossy());
            assert!(
                row.contains(&default),
                "README's {env} row should give the default {default}: {row}"
            );
        }
    }
}

#[test]
fn the_import_help_states_the_domain_rules_and_the_batch_size() {
    let mut command = Cli::command();
    let help = command
        .find_subcommand_mut("import")
        .expect("an import subcommand")
        .render_long_help()
        .to_string();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let statements = [
        format!("sku required; 1-{} characters", Sku::MAX_LEN),
        format!("name 1-{} characters after trimming", ProductName::MAX_LEN),
        format!(
            "price_cents integer, {} to {}",
            PriceCents::MIN,
            PriceCents::MAX
        ),
        format!("stock integer, {} to {}", Stock::MIN, Stock::MAX),
        format!("description 0-{} characters", Description::MAX_LEN),
        format!("category 0-{} characters", Category::MAX_LEN),
        format!("{BATCH_SIZE} per transaction"),
        format!("every {PROGRESS_LINE_EVERY} rows"),
    ];
    for statement in statements {
        assert!(
            help.contains(&statement),
            "`import --help` should say {statement:?}:\n{help}"
        );
    }
}
