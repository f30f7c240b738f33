//! `flagctl`, the command-line client of flagd: argument parsing and the exit codes
//! shared by every command. The binary is `src/main.rs`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod client;
pub mod offline;
pub mod online;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes a pipeline can branch on.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A check failed, or a change was refused as invalid: nothing was changed.
    pub const FAILED: u8 = 1;
    /// The command line was wrong.
    pub const USAGE: u8 = 2;
    /// The environment moved past `--if-version` (or another conflict).
    pub const CONFLICT: u8 = 3;
    /// No such environment, flag, version or token.
    pub const NOT_FOUND: u8 = 4;
    /// flagd cannot be reached, did not answer in time, or is unavailable (5xx).
    pub const UNREACHABLE: u8 = 5;
    /// A change was committed, but not every SDK instance is known to have applied it
    /// (`--wait`); or `wait` timed out. Distinct from 1: retrying the change would make
    /// another version, while waiting longer (`flagctl wait`) would not.
    pub const NOT_APPLIED: u8 = 6;
    /// The token is missing, unknown or revoked (401), or its role or environments do
    /// not allow this (403). Distinct from 5: retrying will not help, a person must.
    pub const UNAUTHORIZED: u8 = 7;
}

const AFTER_HELP: &str = "\
Configuration: FLAGD_URL, FLAGD_TOKEN, FLAGD_ENV (or --url, --token, --env).

Exit codes:
  0  done
  1  a check failed, or a change was refused as invalid (nothing changed)
  2  usage error, including a flag key flagd would refuse
  3  conflict: the environment moved past --if-version
  4  not found: environment, flag, version, SDK instance or token
  5  flagd unreachable, too slow, or unavailable (5xx)
  6  committed, but not applied by every SDK instance in time (--wait, wait),
     unreachable ones included unless --allow-unreachable
  7  unauthorized: no token, an unknown or revoked one (401), or not allowed (403)";

/// Command-line client of the flag service, for CI pipelines and incident responders.
#[derive(Debug, Parser)]
#[command(name = "flagctl", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    connection: client::Connection,
    /// Print JSON on standard output, errors included: an error from flagd is printed
    /// there as its `{"error": …}` body, and described on standard error too.
    #[arg(long, global = true)]
    json: bool,
    /// Print only what a script needs: the new version of a change, a new secret.
    #[arg(long, short = 'q', global = true, conflicts_with = "json")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate flag files strictly, as flagd validates a write: every problem, with its
    /// JSON path. Offline. Exit 0 when all files are valid, 1 otherwise.
    Validate(offline::ValidateArgs),
    /// Evaluate flags of a file for contexts, offline, with the same evaluator as flagd
    /// and the SDK.
    Eval(offline::EvalArgs),
    /// List flags or show one.
    #[command(subcommand)]
    Flags(online::FlagsCmd),
    /// Turn a flag on: its state becomes ENABLED.
    Enable(online::ToggleArgs),
    /// The kill switch: the flag's state becomes DISABLED, and every SDK serves the
    /// code default.
    Disable(online::ToggleArgs),
    /// Set a variant's share of a flag's percentage split (canary promotion).
    Rollout(online::RolloutArgs),
    /// Release plans run by flagd: a ramp step by step, with holds, approvals and
    /// health gates; pause, resume, skip, approve, abort.
    #[command(subcommand)]
    Plan(online::PlanCmd),
    /// Changes applied later by flagd (disable, enable, rollout, import, revert),
    /// against the version they were scheduled on; list and cancel them.
    #[command(subcommand)]
    Schedule(online::ScheduleCmd),
    /// Change requests of a protected environment: propose, approve, reject, comment,
    /// apply, withdraw; its approval policy.
    #[command(subcommand)]
    Request(online::RequestCmd),
    /// Break-glass changes made to a protected environment without approval, for
    /// people other than their author to acknowledge.
    #[command(subcommand)]
    Review(online::ReviewCmd),
    /// The history of versions, or the current one.
    #[command(subcommand)]
    Versions(online::VersionsCmd),
    /// What changed between two versions.
    Diff(online::DiffArgs),
    /// Revert the whole flag set to an earlier version (as a new version).
    Revert(online::RevertArgs),
    /// Restore one flag as it was at an earlier version.
    Restore(online::RestoreArgs),
    /// Undo one version's change: what version N changed goes back to how it was
    /// before N; later, unrelated changes stay (revert --to N-1 would drop them).
    Undo(online::UndoArgs),
    /// Print the flag set as a flagd JSON document.
    Export(online::ExportArgs),
    /// Replace the flag set with a reviewed flagd JSON document (flags as code).
    Import(online::ImportArgs),
    /// The SDK instances, connected or unreachable, and the version each has applied;
    /// `fleet forget ID` forgets one that is gone.
    Fleet(online::FleetArgs),
    /// Wait until every SDK instance has applied a version (exit 6 if not in time).
    Wait(online::WaitArgs),
    /// Who changed what, when and why: the audit log, newest first.
    Audit(online::AuditArgs),
    /// Create, list and revoke API tokens (admin).
    #[command(subcommand)]
    Tokens(online::TokensCmd),
    /// Trigger URLs for monitoring tools (admin): a secret URL that disables or
    /// enables one flag when POSTed to, with no token.
    #[command(subcommand)]
    Triggers(online::TriggersCmd),
    /// Alerts from Alertmanager: what they did to --env, and what they may do (its
    /// alert policy).
    #[command(subcommand)]
    Alerts(online::AlertsCmd),
    /// Notification channels (admin): Slack, Teams, Feishu, DingTalk, WeCom or a signed
    /// webhook told of the changes of --env; a test message; the delivery history.
    #[command(subcommand)]
    Channels(online::ChannelsCmd),
    /// Create SDK keys (admin).
    #[command(subcommand, name = "sdk-keys")]
    SdkKeys(online::SdkKeysCmd),
}

impl Cli {
    /// Runs the command, writing results to stdout and diagnostics to stderr.
    pub fn run(self) -> ExitCode {
        let json = self.json;
        let code = match self.command {
            Command::Validate(a) => {
                offline::validate(&a, json, std::io::stdout().lock(), std::io::stderr().lock())
            }
            Command::Eval(a) => {
                offline::eval(&a, std::io::stdout().lock(), std::io::stderr().lock())
            }
            command => online(command, &self.connection, json, self.quiet),
        };
        ExitCode::from(code)
    }
}

fn online(command: Command, connection: &client::Connection, json: bool, quiet: bool) -> u8 {
    let out = online::Out { json, quiet };
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(async {
            let client = client::Client::new(connection)?;
            online::run(command, &client, &out).await
        }),
        Err(e) => Err(client::Failure::Failed(format!(
            "cannot start the runtime: {e}"
        ))),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            if let (true, client::Failure::Api { body, .. }) = (json, &failure)
                && body.is_object()
            {
                let _ = writeln!(std::io::stdout().lock(), "{body}");
            }
            let _ = writeln!(std::io::stderr().lock(), "flagctl: {}", failure.describe());
            failure.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flagd's ids are URL-safe base64, so one in 64 begins with `-`: clap took such an
    /// id for an option ("the following required arguments were not provided: <ID>").
    #[test]
    fn an_id_that_begins_with_a_hyphen_is_an_id_not_an_option() {
        let id = "-Xy9_a-b";
        for line in [
            "schedule cancel ID --reason no",
            "plan show ID",
            "plan pause ID --reason r",
            "plan abort ID --reason r",
            "request show ID",
            "request approve ID",
            "review ack ID",
            "channels test ID",
            "channels deliveries ID",
            "channels delete ID",
            "triggers revoke ID",
            "tokens revoke ID",
        ] {
            let args = std::iter::once("flagctl")
                .chain(line.split(' ').map(|w| if w == "ID" { id } else { w }));
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(
                format!("{cli:?}").contains(&format!("{id:?}")),
                "{line}: {cli:?}"
            );
        }
    }
}
