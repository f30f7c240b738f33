//! `flagctl`: see `flagctl --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    flagd::cli::Cli::parse().run()
}
