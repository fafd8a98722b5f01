//! The binary's command line, run as a user would.
//!
//! Having an integration test also makes `cargo test` build `target/debug/api-server`,
//! which the workspace's end-to-end tests (`tests/tests/api/binary.rs`) start: cargo
//! only builds a package's binaries for that package's own integration tests.

use std::process::Command;

fn api_server() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api-server"));
    // Every variable the binary reads, from its command-line definition.
    for name in api_server::config::setting_variables() {
        command.env_remove(name);
    }
    command
}

#[test]
fn help_lists_every_subcommand_and_the_main_settings() {
    let output = api_server()
        .arg("--help")
        .output()
        .expect("api-server runs");

    assert!(output.status.success(), "{:?}", output.status);
    let help = String::from_utf8_lossy(&output.stdout);
    for subcommand in ["serve", "migrate", "import"] {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(subcommand)),
            "{subcommand} in:\n{help}"
        );
    }
    for flag in [
        "--bind",
        "--database-url",
        "--redis-url",
        "--cache-prefix",
        "--cache-ttl-secs",
        "--api-token",
    ] {
        assert!(help.contains(flag), "{flag} in:\n{help}");
    }
}

#[test]
fn an_unknown_subcommand_is_refused_with_a_usage_error() {
    let output = api_server()
        .arg("no-such-command")
        .output()
        .expect("api-server runs");

    assert_eq!(output.status.code(), Some(2), "clap's usage error");
    assert!(!output.stderr.is_empty());
}
