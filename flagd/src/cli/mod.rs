//! `flagctl`: argument parsing and exit codes shared by every command.

pub mod offline;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes a pipeline can branch on.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A check failed or a change was refused.
    pub const FAILED: u8 = 1;
    /// The command line was wrong.
    pub const USAGE: u8 = 2;
}

/// Command-line client of the flag service, for CI and incident responders.
#[derive(Debug, Parser)]
#[command(name = "flagctl", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate flag files strictly, as flagd validates a write: every problem, with its
    /// JSON path. Exit 0 when all files are valid, 1 otherwise.
    Validate(offline::ValidateArgs),
    /// Evaluate flags of a file for contexts, offline, with the same evaluator as flagd
    /// and the SDK.
    Eval(offline::EvalArgs),
}

impl Cli {
    /// Runs the command, writing results to stdout and diagnostics to stderr.
    pub fn run(self) -> ExitCode {
        let stdout = std::io::stdout().lock();
        let stderr = std::io::stderr().lock();
        let code = match self.command {
            Command::Validate(a) => offline::validate(&a, stdout, stderr),
            Command::Eval(a) => offline::eval(&a, stdout, stderr),
        };
        ExitCode::from(code)
    }
}
