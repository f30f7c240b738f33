//! The arguments of the commands that talk to flagd.

use super::*;

/// A flag key as flagd accepts one (`flagd_core::check_key`): a key it refuses names
/// no flag, and `.` or `..` cannot even be sent in a URL. Refused here as a usage error
/// (exit 2), before anything is sent.
pub(crate) fn flag_key(key: &str) -> Result<String, String> {
    flagd_core::check_key(key)
        .map(|()| key.to_owned())
        .map_err(|e| format!("the key {e}"))
}

/// What `--wait` and `--if-version` add to a change.
#[derive(Debug, Args)]
pub struct WriteOpts {
    /// Refuse the change (exit 3) unless the environment is still at version N: a
    /// pipeline never overwrites what someone changed under it.
    #[arg(long, value_name = "N")]
    pub(crate) if_version: Option<u64>,
    /// For a change of one flag: refuse it (exit 3) unless that flag was last changed by
    /// version N (its last change in `flags list`), whatever happened to other flags
    /// since: a canary step is not aborted by an unrelated change elsewhere.
    #[arg(long, value_name = "N")]
    pub(crate) if_flag_version: Option<u64>,
    /// Return only when every SDK instance flagd knows has applied the new version;
    /// exit 6 after --timeout, naming the instances that lag. An instance whose
    /// connection was lost before it applied the version lags too.
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long --wait waits, e.g. 30s or 2m.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, requires = "wait")]
    pub(crate) timeout: Duration,
    /// With --wait: do not wait for unreachable instances (they are still named).
    #[arg(long, requires = "wait")]
    pub(crate) allow_unreachable: bool,
    /// With --wait: count an OpenFeature flagd provider (gRPC), which cannot
    /// acknowledge, as done once flagd has sent it the version. Without it, a fleet
    /// with such providers never converges: --wait ends, exit 6, once all that
    /// acknowledge applied it and the providers were sent it.
    #[arg(long, requires = "wait")]
    pub(crate) allow_unacknowledged: bool,
}

/// `flagctl flags …`
#[derive(Debug, Subcommand)]
pub enum FlagsCmd {
    /// The environment's flags: state, default variant, split, and the last change.
    List,
    /// One flag's definition, in flagd's JSON format.
    Get {
        /// The flag's key.
        #[arg(value_parser = flag_key)]
        flag: String,
        /// As it was at this version (default: the head).
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
}

/// `flagctl enable|disable FLAG --reason R`
#[derive(Debug, Args)]
pub struct ToggleArgs {
    /// The flag's key.
    #[arg(value_parser = flag_key)]
    pub(crate) flag: String,
    /// Why, for the audit log (required).
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) write: WriteOpts,
}

/// `flagctl rollout FLAG --variant V --percent P`
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The flag's key.
    #[arg(value_parser = flag_key)]
    pub(crate) flag: String,
    /// The variant whose share is set.
    #[arg(long)]
    pub(crate) variant: String,
    /// Its share of the split, 0 to 100 (two decimals at most); the other buckets share
    /// the rest in proportion to their weights.
    #[arg(long)]
    pub(crate) percent: f64,
    /// Why, for the audit log.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    #[command(flatten)]
    pub(crate) write: WriteOpts,
}

/// `flagctl versions …`
#[derive(Debug, Subcommand)]
pub enum VersionsCmd {
    /// The history, newest first.
    List {
        /// Only the versions that changed this flag.
        #[arg(long, value_parser = flag_key)]
        flag: Option<String>,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only versions before this one (to page further back).
        #[arg(long, value_name = "N")]
        before: Option<u64>,
    },
    /// The current version alone, for scripts: `base=$(flagctl versions head)`.
    Head,
}

/// `flagctl diff A [B]`
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// From this version.
    pub(crate) from: u64,
    /// To this version (default: the head).
    pub(crate) to: Option<u64>,
}

/// `flagctl revert --to N --reason R`
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// Make a new version whose content equals version N.
    #[arg(long, value_name = "N")]
    pub(crate) to: u64,
    /// Confirm a revert that removes every flag (to version 0, or to a version that
    /// held none).
    #[arg(long)]
    pub(crate) empty: bool,
    /// Why, for the audit log (required).
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) write: WriteOpts,
}

/// `flagctl undo N --reason R`
#[derive(Debug, Args)]
pub struct UndoArgs {
    /// The version whose change is undone: the items it changed go back to their
    /// definitions before it; later changes to other items stay.
    #[arg(value_name = "N")]
    pub(crate) version: u64,
    /// Why, for the audit log (required unless --dry-run).
    #[arg(long, required_unless_present = "dry_run")]
    pub(crate) reason: Option<String>,
    /// Undo also the items a later version changed again (their later changes are
    /// lost); without it such an undo is refused (exit 3) and the later versions named.
    #[arg(long)]
    pub(crate) force: bool,
    /// Only show what would change, and which later versions touched the same flags.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) write: WriteOpts,
}

/// `flagctl restore FLAG --from N --reason R`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The flag's key.
    #[arg(value_parser = flag_key)]
    pub(crate) flag: String,
    /// Its definition as it was at version N (removed if it did not exist then); other
    /// flags are left alone.
    #[arg(long, value_name = "N")]
    pub(crate) from: u64,
    /// Why, for the audit log (required).
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) write: WriteOpts,
}

/// `flagctl export [--version N] > FILE`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// As it was at this version (default: the head).
    #[arg(long, value_name = "N")]
    pub(crate) version: Option<u64>,
}

/// `flagctl import FILE`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A flagd JSON document (`-` reads standard input). It replaces the whole set: flags
    /// it does not name are removed.
    pub(crate) file: PathBuf,
    /// Why, for the audit log.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Show what the import would change, and change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) write: WriteOpts,
}

/// `flagctl wait [--version N]`
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The version to wait for (default: the head). One that does not exist yet exits 4
    /// at once.
    #[arg(long, value_name = "N")]
    pub(crate) version: Option<u64>,
    /// How long to wait, e.g. 30s or 2m; then exit 6, naming the instances that lag.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// Do not wait for unreachable instances (flagd lost their connection; they may
    /// still serve an older version). They are still named.
    #[arg(long)]
    pub(crate) allow_unreachable: bool,
    /// Count an OpenFeature flagd provider (gRPC), which cannot acknowledge, as done
    /// once flagd has sent it the version (otherwise exit 6 once nothing else lags).
    #[arg(long)]
    pub(crate) allow_unacknowledged: bool,
}

/// `flagctl fleet [forget INSTANCE]`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub(crate) command: Option<FleetCmd>,
}

/// `flagctl fleet …`
#[derive(Debug, Subcommand)]
pub enum FleetCmd {
    /// Forget an SDK instance known to be gone (a host that was shut down without a
    /// goodbye): it stops counting as not converged. If it is still running, it comes
    /// back when it reconnects. Responder, editor or admin.
    Forget {
        /// Its instance id (see `flagctl fleet`).
        instance: String,
    },
}

/// `flagctl audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries about this flag.
    #[arg(long, value_parser = flag_key)]
    pub(crate) flag: Option<String>,
    /// Only what this token (by name) did.
    #[arg(long)]
    pub(crate) actor: Option<String>,
    /// One action (`flag.disable`), or a family ending in `.` (`flag.`).
    #[arg(long)]
    pub(crate) action: Option<String>,
    /// Since a time: RFC 3339 (2026-12-01T09:00:00Z), or how long ago (30m, 2h, 7d).
    #[arg(long, value_parser = since)]
    pub(crate) since: Option<String>,
    /// How many entries (1 to 1000).
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: u32,
    /// Only entries older than this id (to page further back).
    #[arg(long, value_name = "ID")]
    pub(crate) before: Option<u64>,
    /// Every environment the token sees, not only --env.
    #[arg(long)]
    pub(crate) all_environments: bool,
}

/// `flagctl tokens …`
#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// Create an API token and print its secret, once.
    Create {
        /// A name: the author of everything the token changes.
        #[arg(long)]
        name: String,
        /// viewer, editor, responder, ci, admin, or alertmanager (Alertmanager's
        /// webhook: it may deliver alerts and nothing else).
        #[arg(long)]
        role: String,
        /// Limit the token to these environments; by default to --env / FLAGD_ENV if
        /// given, otherwise none.
        #[arg(long = "limit-env", value_name = "ENV", value_delimiter = ',')]
        limit: Vec<String>,
        /// Let the token act on every environment even when --env / FLAGD_ENV is set.
        #[arg(long, conflicts_with = "limit")]
        all_environments: bool,
    },
    /// The tokens and SDK keys (never their secrets).
    List,
    /// Revoke a token or SDK key: it stops working at once.
    Revoke {
        /// Its id (see `tokens list`).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

/// `flagctl sdk-keys …`
#[derive(Debug, Subcommand)]
pub enum SdkKeysCmd {
    /// Create an SDK key for --env and print its secret, once.
    Create {
        /// A name, e.g. the service that will use it.
        #[arg(long)]
        name: Option<String>,
    },
}
