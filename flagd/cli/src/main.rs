//! `flagctl`: see `flagctl --help`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use clap::Parser;

fn main() -> std::process::ExitCode {
    flagctl::Cli::parse().run()
}
