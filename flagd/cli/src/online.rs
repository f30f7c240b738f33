//! The commands that talk to a running flagd: reading flags, versions and the fleet,
//! changing flags, reverting, flags as code, tokens, and waiting for the fleet.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use flagd_core::{FlagSet, Strictness};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, Convergence, Failure, Request, is_unreachable};

/// A flag key as flagd accepts one (`flagd_core::check_key`): a key it refuses names
/// no flag, and `.` or `..` cannot even be sent in a URL. Refused here as a usage error
/// (exit 2), before anything is sent.
fn flag_key(key: &str) -> Result<String, String> {
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
    if_version: Option<u64>,
    /// Return only when every SDK instance flagd knows has applied the new version;
    /// exit 6 after --timeout, naming the instances that lag. An instance whose
    /// connection was lost before it applied the version lags too.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, e.g. 30s or 2m.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, requires = "wait")]
    timeout: Duration,
    /// With --wait: do not wait for unreachable instances (they are still named).
    #[arg(long, requires = "wait")]
    allow_unreachable: bool,
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
    flag: String,
    /// Why, for the audit log (required).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    write: WriteOpts,
}

/// `flagctl rollout FLAG --variant V --percent P`
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The flag's key.
    #[arg(value_parser = flag_key)]
    flag: String,
    /// The variant whose share is set.
    #[arg(long)]
    variant: String,
    /// Its share of the split, 0 to 100 (two decimals at most); the other buckets share
    /// the rest in proportion to their weights.
    #[arg(long)]
    percent: f64,
    /// Why, for the audit log.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    write: WriteOpts,
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
    from: u64,
    /// To this version (default: the head).
    to: Option<u64>,
}

/// `flagctl revert --to N --reason R`
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// Make a new version whose content equals version N.
    #[arg(long, value_name = "N")]
    to: u64,
    /// Confirm a revert that removes every flag (to version 0, or to a version that
    /// held none).
    #[arg(long)]
    empty: bool,
    /// Why, for the audit log (required).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    write: WriteOpts,
}

/// `flagctl restore FLAG --from N --reason R`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The flag's key.
    #[arg(value_parser = flag_key)]
    flag: String,
    /// Its definition as it was at version N (removed if it did not exist then); other
    /// flags are left alone.
    #[arg(long, value_name = "N")]
    from: u64,
    /// Why, for the audit log (required).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    write: WriteOpts,
}

/// `flagctl export [--version N] > FILE`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// As it was at this version (default: the head).
    #[arg(long, value_name = "N")]
    version: Option<u64>,
}

/// `flagctl import FILE`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A flagd JSON document (`-` reads standard input). It replaces the whole set: flags
    /// it does not name are removed.
    file: PathBuf,
    /// Why, for the audit log.
    #[arg(long)]
    reason: Option<String>,
    /// Show what the import would change, and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    write: WriteOpts,
}

/// `flagctl wait [--version N]`
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The version to wait for (default: the head). One that does not exist yet exits 4
    /// at once.
    #[arg(long, value_name = "N")]
    version: Option<u64>,
    /// How long to wait, e.g. 30s or 2m; then exit 6, naming the instances that lag.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Do not wait for unreachable instances (flagd lost their connection; they may
    /// still serve an older version). They are still named.
    #[arg(long)]
    allow_unreachable: bool,
}

/// `flagctl fleet [forget INSTANCE]`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FleetArgs {
    #[command(subcommand)]
    command: Option<FleetCmd>,
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
    flag: Option<String>,
    /// Only what this token (by name) did.
    #[arg(long)]
    actor: Option<String>,
    /// One action (`flag.disable`), or a family ending in `.` (`flag.`).
    #[arg(long)]
    action: Option<String>,
    /// Since a time: RFC 3339 (2026-12-01T09:00:00Z), or how long ago (30m, 2h, 7d).
    #[arg(long, value_parser = since)]
    since: Option<String>,
    /// How many entries (1 to 1000).
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Only entries older than this id (to page further back).
    #[arg(long, value_name = "ID")]
    before: Option<u64>,
    /// Every environment the token sees, not only --env.
    #[arg(long)]
    all_environments: bool,
}

/// `flagctl tokens …`
#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// Create an API token and print its secret, once.
    Create {
        /// A name: the author of everything the token changes.
        #[arg(long)]
        name: String,
        /// viewer, editor, responder, ci or admin.
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

/// Output settings and the streams.
#[derive(Debug)]
pub struct Out {
    /// Print JSON.
    pub json: bool,
    /// Print only what a script needs.
    pub quiet: bool,
}

type Done = Result<u8, Failure>;

fn io(e: &std::io::Error) -> Failure {
    Failure::Failed(format!("cannot write the output: {e}"))
}

fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| io(&e))
}

fn print_json(v: &Value) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(v).map_err(|e| Failure::Failed(e.to_string()))?;
    text.push('\n');
    print(&text)
}

fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            s.push_str(c);
            if i + 1 < widths.len() {
                // Padded by hand: `format!`'s width is a u16 and panics past it (a
                // 64 KiB cell).
                let pad = w.saturating_sub(c.chars().count()) + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(t)) if t.is_empty() => "-".into(),
        Some(Value::String(t)) => t.clone(),
        Some(other) => other.to_string(),
    }
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

fn list_of(v: &Value, max: usize) -> String {
    let items: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut text = items
        .iter()
        .take(max)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        text.push_str(&format!(" and {} more", items.len() - max));
    }
    text
}

/// What a flag's targeting does, in a few words.
fn targeting_summary(def: &Value) -> String {
    match def.get("targeting") {
        None | Some(Value::Null) => "-".into(),
        Some(Value::Object(o)) if o.is_empty() => "-".into(),
        Some(_) => match flagd_core::document::rollout::split(def) {
            Some(buckets) => {
                let split = buckets
                    .iter()
                    .map(|(v, p)| format!("{v} {}%", (p * 100.0).round() / 100.0))
                    .collect::<Vec<_>>()
                    .join(" / ");
                if def.pointer("/targeting/if").is_some() {
                    format!("rules, then {split}")
                } else {
                    split
                }
            }
            None => "rules".into(),
        },
    }
}

impl Out {
    /// Makes a change (with `--if-version`), prints its answer, then `--wait`s.
    async fn change(&self, client: &Client, env: &str, req: Request<'_>, opts: &WriteOpts) -> Done {
        let body = client.call(req.if_version(opts.if_version)).await?.body;
        let version = body.get("version").and_then(Value::as_u64).unwrap_or(0);
        let waited = if opts.wait {
            let w = client
                .wait_for_fleet(env, Some(version), opts.timeout, opts.allow_unreachable)
                .await;
            // The change is made whatever the wait meets: a pipeline must not take a
            // failed wait for a failed change and make it again (exit 6, not 5 or 7).
            Some(w.map_err(|e| {
                Failure::NotApplied(format!(
                    "{env}: version {version} is committed, but whether the fleet applied it \
                     is unknown: {}",
                    e.describe()
                ))
            }))
        } else {
            None
        };
        if self.json {
            let mut v = body.clone();
            if let (Value::Object(o), Some(w)) = (&mut v, &waited) {
                let fleet = match w {
                    Ok(c) => c.to_json(),
                    Err(e) => json!({"converged": false, "error": e.describe()}),
                };
                o.insert("fleet".into(), fleet);
            }
            print_json(&v)?;
        } else if self.quiet {
            print(&format!("{version}\n"))?;
        } else if body.get("changed").and_then(Value::as_bool) == Some(false) {
            print(&format!(
                "{env}: nothing to change; still version {version}\n"
            ))?;
        } else {
            let flags = list_of(&body["changedFlags"], 5);
            print(&format!(
                "{env}: version {version}{}\n",
                if flags.is_empty() {
                    String::new()
                } else {
                    format!(" ({flags})")
                }
            ))?;
        }
        match waited {
            Some(w) => self.converged(env, &w?),
            None => Ok(super::exit::OK),
        }
    }

    /// Reports where the fleet stands; exit 6 if it has not converged.
    fn converged(&self, env: &str, c: &Convergence) -> Done {
        let ms = format!("{:.1}", c.waited.as_secs_f64() * 1000.0);
        let excused: Vec<&Value> = c.excused().collect();
        if !excused.is_empty() {
            note(&named(
                &format!(
                    "flagctl: not counted (--allow-unreachable): {} that did not apply version {}:",
                    plural(excused.len(), "unreachable SDK instance"),
                    c.version
                ),
                excused.iter().copied(),
            ));
        }
        warn_problems(c);
        if c.converged() {
            if !self.json && !self.quiet {
                let applied = c.total - c.lagging.len();
                let text = if c.total == 0 {
                    format!(
                        "{env}: no SDK instance is connected to this flagd; nothing to wait for\n"
                    )
                } else {
                    let who = if !excused.is_empty() {
                        format!("{applied} of {}", plural(c.total, "SDK instance"))
                    } else if c.total == 1 {
                        "the one SDK instance".to_owned()
                    } else {
                        format!("all {} SDK instances", c.total)
                    };
                    // Lost after applying it: it did apply it, but nobody hears it now.
                    let lost = c.unreachable.saturating_sub(excused.len());
                    let lost = if lost == 0 {
                        String::new()
                    } else {
                        format!("; {lost} of them unreachable now")
                    };
                    format!(
                        "{env}: {who} applied version {} ({ms} ms{lost})\n",
                        c.version
                    )
                };
                print(&text)?;
            }
            return Ok(super::exit::OK);
        }
        let blocking: Vec<&Value> = c.blocking().collect();
        let mut text = named(
            &format!(
                "flagctl: {env}: {} of {} did not apply version {} within {ms} ms:",
                blocking.len(),
                plural(c.total, "SDK instance"),
                c.version
            ),
            blocking.iter().copied(),
        );
        if blocking.iter().any(|i| is_unreachable(i)) {
            text.push_str(
                "\n  An unreachable instance may still serve what it last applied. It counts \
                 until it reconnects or\n  flagd's --fleet-ttl passes: `flagctl fleet forget \
                 ID` once it is known to be gone, or\n  --allow-unreachable not to wait for it.",
            );
        }
        note(&text);
        Ok(super::exit::NOT_APPLIED)
    }
}

/// A title, then one line per instance.
fn named<'a>(title: &str, instances: impl Iterator<Item = &'a Value>) -> String {
    let mut text = title.to_owned();
    for i in instances {
        text.push_str("\n  ");
        text.push_str(&instance_line(i));
    }
    text
}

/// `i-2 (host h, sdk/1): on version 6, last ack T`, or for an instance flagd lost,
/// `… unreachable since T, last applied v6`.
fn instance_line(i: &Value) -> String {
    let who = format!(
        "{} (host {}, {})",
        s(i, "instance"),
        s(i, "host"),
        s(i, "sdk")
    );
    if is_unreachable(i) {
        let applied = match i.get("appliedVersion").and_then(Value::as_u64) {
            Some(v) => format!("last applied v{v}"),
            None => "never applied a version".to_owned(),
        };
        format!(
            "{who}: unreachable since {}, {applied}",
            s(i, "unreachableSince")
        )
    } else {
        format!(
            "{who}: on version {}, last ack {}",
            s(i, "appliedVersion"),
            s(i, "lastAck")
        )
    }
}

/// Instances that applied the version but could not load some of its flags: those
/// flags evaluate to the code default there (reason `ERROR`). Not a failure of the
/// wait, but worth knowing during a rollback.
fn warn_problems(c: &Convergence) {
    for i in &c.troubled {
        note(&format!(
            "flagctl: warning: {} applied version {}, but could not load {}; \
             they evaluate to the code default there:{}",
            s(i, "instance"),
            c.version,
            plural(problems_of(i).len(), "flag"),
            problem_lines(i, 5)
        ));
    }
}

/// `problems` of a fleet entry.
fn problems_of(i: &Value) -> &[Value] {
    i.get("problems")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

/// An instance's problems, one `\n  path: message` line each (at most `max`), then its
/// last error.
fn problem_lines(i: &Value, max: usize) -> String {
    let problems = problems_of(i);
    let mut text = String::new();
    for p in problems.iter().take(max) {
        text.push_str(&format!("\n  {}: {}", s(p, "path"), s(p, "message")));
    }
    if problems.len() > max {
        text.push_str(&format!("\n  and {} more", problems.len() - max));
    }
    if let Some(e) = i.get("lastError").and_then(Value::as_str) {
        text.push_str(&format!("\n  last error: {e}"));
    }
    text
}

/// A read: with `--json` its answer is printed as it is and `None` returned; otherwise
/// the answer, for the text view.
async fn read(client: &Client, out: &Out, req: Request<'_>) -> Result<Option<Value>, Failure> {
    let body = client.call(req).await?.body;
    if out.json {
        print_json(&body)?;
        return Ok(None);
    }
    Ok(Some(body))
}

/// Runs one command against flagd.
pub(super) async fn run(cmd: super::Command, client: &Client, out: &Out) -> Done {
    use super::Command as C;
    match cmd {
        C::Flags(FlagsCmd::List) => flags_list(client, out).await,
        C::Flags(FlagsCmd::Get { flag, version }) => {
            let env = client.environment()?;
            let q: Vec<(&str, String)> = version
                .map(|v| ("version", v.to_string()))
                .into_iter()
                .collect();
            let a = client
                .call(Request::get(&["environments", env, "flags", &flag]).query(&q))
                .await?;
            print_json(&a.body)?;
            Ok(super::exit::OK)
        }
        C::Enable(a) => toggle(client, out, a, "enable").await,
        C::Disable(a) => toggle(client, out, a, "disable").await,
        C::Rollout(a) => {
            let env = client.environment()?;
            let mut body = json!({"variant": a.variant, "percent": a.percent});
            if let Some(r) = &a.reason {
                body["reason"] = json!(r);
            }
            out.change(
                client,
                env,
                Request::new(
                    Method::POST,
                    &["environments", env, "flags", &a.flag, "rollout"],
                )
                .json(&body),
                &a.write,
            )
            .await
        }
        C::Versions(v) => versions(client, out, v).await,
        C::Diff(d) => {
            let env = client.environment()?;
            let mut q = vec![("from", d.from.to_string())];
            if let Some(to) = d.to {
                q.push(("to", to.to_string()));
            }
            if let Some(body) = read(
                client,
                out,
                Request::get(&["environments", env, "diff"]).query(&q),
            )
            .await?
            {
                print(&diff_text(
                    env,
                    &format!("version {} → {}", s(&body, "from"), s(&body, "to")),
                    &body["changes"],
                ))?;
            }
            Ok(super::exit::OK)
        }
        C::Revert(a) => {
            let env = client.environment()?;
            if a.to == 0 && !a.empty {
                return Err(Failure::Usage(
                    "version 0 is the empty flag set: reverting to it removes every flag; add --empty to confirm".into(),
                ));
            }
            out.change(
                client,
                env,
                Request::new(Method::POST, &["environments", env, "revert"])
                    .json(&json!({"version": a.to, "reason": a.reason, "empty": a.empty})),
                &a.write,
            )
            .await
        }
        C::Restore(a) => {
            let env = client.environment()?;
            out.change(
                client,
                env,
                Request::new(
                    Method::POST,
                    &["environments", env, "flags", &a.flag, "restore"],
                )
                .json(&json!({"version": a.from, "reason": a.reason})),
                &a.write,
            )
            .await
        }
        C::Export(a) => {
            let env = client.environment()?;
            let q: Vec<(&str, String)> = a
                .version
                .map(|v| ("version", v.to_string()))
                .into_iter()
                .collect();
            let answer = client
                .call(Request::get(&["environments", env, "flags"]).query(&q))
                .await?;
            print_json(&answer.body)?;
            if let (Some(v), false) = (answer.version, out.quiet) {
                note(&format!("flagctl: exported {env} at version {v}"));
            }
            Ok(super::exit::OK)
        }
        C::Import(a) => import(client, out, a).await,
        C::Fleet(FleetArgs { command: None }) => fleet(client, out).await,
        C::Fleet(FleetArgs {
            command: Some(FleetCmd::Forget { instance }),
        }) => {
            let env = client.environment()?;
            // flagd would forget a connected instance too, hiding it from --wait until
            // it reconnects: only one whose connection is lost is forgotten.
            let fleet = client
                .call(Request::get(&["environments", env, "fleet"]))
                .await?
                .body;
            let known = fleet["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|i| i["instance"] == instance.as_str());
            if let Some(i) = known.filter(|i| !is_unreachable(i)) {
                return Err(Failure::Failed(format!(
                    "{env}: {} is connected; not forgotten (forget an instance once it is \
                     unreachable and known to be gone)",
                    instance_line(i)
                )));
            }
            client
                .call(Request::new(
                    Method::DELETE,
                    &["environments", env, "fleet", &instance],
                ))
                .await?;
            if out.json {
                print_json(&json!({"environment": env, "forgotten": instance}))?;
            } else if !out.quiet {
                print(&format!("{env}: forgot SDK instance {instance}\n"))?;
            }
            Ok(super::exit::OK)
        }
        C::Wait(w) => {
            let env = client.environment()?;
            let c = client
                .wait_for_fleet(env, w.version, w.timeout, w.allow_unreachable)
                .await?;
            if out.json {
                print_json(&c.to_json())?;
            }
            out.converged(env, &c)
        }
        C::Tokens(t) => tokens(client, out, t).await,
        C::Audit(a) => audit(client, out, a).await,
        C::SdkKeys(SdkKeysCmd::Create { name }) => {
            let env = client.environment()?;
            let body = name.map_or_else(|| json!({}), |n| json!({"name": n}));
            let a = client
                .call(Request::new(Method::POST, &["environments", env, "sdk-keys"]).json(&body))
                .await?;
            secret(out, &a.body, &format!("an SDK key for {env}"))
        }
        C::Validate(_) | C::Eval(_) => Err(Failure::Usage("validate and eval run offline".into())),
    }
}

async fn head(client: &Client, env: &str) -> Result<u64, Failure> {
    let a = client.call(Request::get(&["environments", env])).await?;
    a.body
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| Failure::Failed("flagd's answer has no version".into()))
}

async fn toggle(client: &Client, out: &Out, a: ToggleArgs, action: &str) -> Done {
    let env = client.environment()?;
    let path = ["environments", env, "flags", &a.flag, action];
    let req = Request::new(Method::POST, &path).json(&json!({"reason": a.reason}));
    out.change(client, env, req, &a.write).await
}

async fn flags_list(client: &Client, out: &Out) -> Done {
    let env = client.environment()?;
    let Some(body) = read(
        client,
        out,
        Request::get(&["environments", env, "flag-summaries"]),
    )
    .await?
    else {
        return Ok(super::exit::OK);
    };
    let flags = body["flags"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = flags
        .iter()
        .map(|f| {
            let def = &f["definition"];
            let last = &f["lastChange"];
            vec![
                s(f, "key"),
                s(def, "state"),
                s(def, "defaultVariant"),
                targeting_summary(def),
                if last.is_null() {
                    "-".into()
                } else {
                    format!(
                        "v{} {} by {}, {}",
                        s(last, "version"),
                        s(last, "kind"),
                        s(last, "author"),
                        s(last, "createdAt")
                    )
                },
            ]
        })
        .collect();
    let mut text = format!(
        "{env} at version {}: {}\n",
        s(&body, "version"),
        plural(flags.len(), "flag")
    );
    if !rows.is_empty() {
        text.push_str(&table(
            &["FLAG", "STATE", "DEFAULT", "TARGETING", "LAST CHANGE"],
            &rows,
        ));
    }
    print(&text)?;
    Ok(super::exit::OK)
}

async fn versions(client: &Client, out: &Out, v: VersionsCmd) -> Done {
    let env = client.environment()?;
    let (flag, limit, before) = match v {
        VersionsCmd::Head => {
            let version = head(client, env).await?;
            if out.json {
                print_json(&json!({"environment": env, "version": version}))?;
            } else {
                print(&format!("{version}\n"))?;
            }
            return Ok(super::exit::OK);
        }
        VersionsCmd::List {
            flag,
            limit,
            before,
        } => (flag, limit, before),
    };
    let mut q = vec![("limit", limit.to_string())];
    if let Some(f) = flag {
        q.push(("flag", f));
    }
    if let Some(b) = before {
        q.push(("before", b.to_string()));
    }
    let Some(body) = read(
        client,
        out,
        Request::get(&["environments", env, "versions"]).query(&q),
    )
    .await?
    else {
        return Ok(super::exit::OK);
    };
    let rows: Vec<Vec<String>> = body["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let kind = match v.get("revertedTo").and_then(Value::as_u64) {
                Some(to) => format!("{} to v{to}", s(v, "kind")),
                None => s(v, "kind"),
            };
            vec![
                s(v, "version"),
                kind,
                s(v, "author"),
                s(v, "createdAt"),
                list_of(&v["changedFlags"], 3),
                s(v, "reason"),
            ]
        })
        .collect();
    print_page(
        &["VERSION", "KIND", "AUTHOR", "WHEN", "FLAGS", "REASON"],
        &rows,
        &body,
    )
}

/// A table of one page, and how to ask for the next one.
fn print_page(header: &[&str], rows: &[Vec<String>], body: &Value) -> Done {
    let mut text = table(header, rows);
    if let Some(next) = body.get("next").and_then(Value::as_u64) {
        text.push_str(&format!("(older: --before {next})\n"));
    }
    print(&text)?;
    Ok(super::exit::OK)
}

/// A diff as lines: `+` added, `-` removed, `~` changed with each changed property.
fn diff_text(env: &str, title: &str, changes: &Value) -> String {
    let changes = changes.as_array().cloned().unwrap_or_default();
    let mut text = format!("{env}: {title}: {}\n", plural(changes.len(), "change"));
    for c in &changes {
        let kind = match c["kind"].as_str() {
            Some("flag") | None => String::new(),
            Some("evaluator") => "$evaluators.".into(),
            Some(_) => "(top level) ".into(),
        };
        let key = s(c, "key");
        match c["change"].as_str() {
            Some("added") => text.push_str(&format!("+ {kind}{key}: {}\n", c["after"])),
            Some("removed") => text.push_str(&format!("- {kind}{key}\n")),
            _ => {
                text.push_str(&format!("~ {kind}{key}\n"));
                match (c["before"].as_object(), c["after"].as_object()) {
                    (Some(b), Some(a)) => {
                        let show = |v: Option<&Value>| v.map_or("(none)".into(), Value::to_string);
                        let names = b.keys().chain(a.keys().filter(|n| !b.contains_key(*n)));
                        for n in names.filter(|n| b.get(*n) != a.get(*n)) {
                            text.push_str(&format!(
                                "    {n}: {} → {}\n",
                                show(b.get(n)),
                                show(a.get(n))
                            ));
                        }
                    }
                    _ => text.push_str(&format!("    {} → {}\n", c["before"], c["after"])),
                }
            }
        }
    }
    text
}

async fn import(client: &Client, out: &Out, a: ImportArgs) -> Done {
    let env = client.environment()?;
    let name = a.file.display().to_string();
    let text = if a.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin().lock())
    } else {
        std::fs::read_to_string(&a.file)
    }
    .map_err(|e| Failure::Failed(format!("{name}: cannot read the file: {e}")))?;
    // The same strict validation as flagd's: a bad file is reported with every problem
    // before anything is sent.
    let set = match FlagSet::parse_str(&text, Strictness::Strict) {
        Ok(set) => set,
        Err(e) => {
            if out.json {
                print_json(&json!({"file": name, "valid": false, "errors": e.0}))?;
            }
            let mut msg = format!("{name}: not a valid flag set, nothing imported:");
            for p in &e.0 {
                msg.push_str(&format!("\n  {}: {}", p.path, p.message));
            }
            return Err(Failure::Failed(msg));
        }
    };
    if a.dry_run {
        let current = client
            .call(Request::get(&["environments", env, "flags"]))
            .await?;
        let at = current.version.unwrap_or(0);
        if let Some(expected) = a.write.if_version.filter(|v| *v != at) {
            return Err(Failure::Conflict(format!(
                "{env} is at version {at}, not {expected}: it changed since"
            )));
        }
        let changes = serde_json::json!(flagd_core::document::diff(
            &flagd_core::document::items_in(&current.body),
            &flagd_core::document::items_in(&set.to_json()),
        ));
        if out.json {
            print_json(
                &json!({"environment": env, "version": at, "dryRun": true, "changes": changes}),
            )?;
        } else {
            print(&diff_text(
                env,
                &format!("importing {name} onto version {at} would make"),
                &changes,
            ))?;
        }
        return Ok(super::exit::OK);
    }
    out.change(
        client,
        env,
        Request::new(Method::PUT, &["environments", env, "flags"])
            .raw(text)
            .reason_header(a.reason.as_deref()),
        &a.write,
    )
    .await
}

async fn fleet(client: &Client, out: &Out) -> Done {
    let env = client.environment()?;
    let Some(body) = read(client, out, Request::get(&["environments", env, "fleet"])).await? else {
        return Ok(super::exit::OK);
    };
    let instances = body["instances"].as_array().map_or(&[][..], Vec::as_slice);
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            let problems = problems_of(i).len();
            vec![
                s(i, "instance"),
                s(i, "host"),
                s(i, "sdk"),
                if is_unreachable(i) {
                    format!("unreachable since {}", s(i, "unreachableSince"))
                } else {
                    s(i, "state")
                },
                s(i, "appliedVersion"),
                s(i, "lastAck"),
                match (problems, i.get("lastError").and_then(Value::as_str)) {
                    (0, None) => "-".into(),
                    (0, Some(_)) => "last error".into(),
                    (n, _) => plural(n, "flag"),
                },
                s(i, "keyName"),
            ]
        })
        .collect();
    let unreachable = instances.iter().filter(|i| is_unreachable(i)).count();
    let mut text = if unreachable == 0 {
        format!(
            "{env} at version {}: {} connected, {} on it\n",
            s(&body, "version"),
            plural(rows.len(), "SDK instance"),
            s(&body, "onVersion"),
        )
    } else {
        format!(
            "{env} at version {}: {}, {unreachable} unreachable, {} on it\n",
            s(&body, "version"),
            plural(rows.len(), "SDK instance"),
            s(&body, "onVersion"),
        )
    };
    if !rows.is_empty() {
        text.push_str(&table(
            &[
                "INSTANCE", "HOST", "SDK", "STATE", "VERSION", "LAST ACK", "PROBLEMS", "SDK KEY",
            ],
            &rows,
        ));
    }
    // What each instance could not load, below the table: paths are long.
    for i in instances {
        let lines = problem_lines(i, 20);
        if !lines.is_empty() {
            text.push_str(&format!("{} could not load:{lines}\n", s(i, "instance")));
        }
    }
    if unreachable > 0 {
        text.push_str(
            "(unreachable: flagd lost the connection without a goodbye; the instance may still \
             serve what it last applied. `flagctl fleet forget ID` once it is known to be gone.)\n",
        );
    }
    print(&text)?;
    Ok(super::exit::OK)
}

/// `--since`: how long ago (`2h`, as the Unix milliseconds of two hours ago) or an RFC
/// 3339 time (passed as given); anything else is a usage error (exit 2) that shows both
/// forms.
fn since(text: &str) -> Result<String, String> {
    if let Ok(d) = humantime::parse_duration(text) {
        return std::time::SystemTime::now()
            .checked_sub(d)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|t| t.as_millis().to_string())
            .ok_or_else(|| format!("{text} ago is before 1970"));
    }
    if humantime::parse_rfc3339_weak(text).is_ok() {
        return Ok(text.to_owned());
    }
    Err(format!(
        "{text:?} is neither how long ago (30m, 2h, 7d) nor an RFC 3339 time (2026-12-01T09:00:00Z)"
    ))
}

async fn audit(client: &Client, out: &Out, a: AuditArgs) -> Done {
    let mut q = vec![("limit", a.limit.to_string())];
    if !a.all_environments {
        q.push(("environment", client.environment()?.to_owned()));
    }
    for (name, value) in [
        ("flag", a.flag),
        ("actor", a.actor),
        ("action", a.action),
        ("since", a.since),
        ("before", a.before.map(|b| b.to_string())),
    ] {
        if let Some(v) = value {
            q.push((name, v));
        }
    }
    let Some(body) = read(client, out, Request::get(&["audit"]).query(&q)).await? else {
        return Ok(super::exit::OK);
    };
    let rows: Vec<Vec<String>> = body["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                s(e, "at"),
                s(e, "actor"),
                s(e, "action"),
                s(e, "environment"),
                s(e, "target"),
                s(e, "version"),
                s(e, "reason"),
            ]
        })
        .collect();
    print_page(
        &[
            "WHEN",
            "ACTOR",
            "ACTION",
            "ENVIRONMENT",
            "TARGET",
            "VERSION",
            "REASON",
        ],
        &rows,
        &body,
    )
}

/// Prints a new secret alone on standard output (so that `$(…)` captures it) and what
/// it is on standard error; or the whole answer with `--json`.
fn secret(out: &Out, body: &Value, what: &str) -> Done {
    if out.json {
        print_json(body)?;
        return Ok(super::exit::OK);
    }
    let secret = body
        .get("secret")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::Failed("flagd's answer has no secret".into()))?;
    print(&format!("{secret}\n"))?;
    if !out.quiet {
        note(&format!(
            "flagctl: created {what}; the secret above is shown only this once"
        ));
    }
    Ok(super::exit::OK)
}

async fn tokens(client: &Client, out: &Out, t: TokensCmd) -> Done {
    match t {
        TokensCmd::Create {
            name,
            role,
            limit,
            all_environments,
        } => {
            let limit = if all_environments {
                Vec::new()
            } else if limit.is_empty() {
                client
                    .environment()
                    .map(|e| vec![e.to_owned()])
                    .unwrap_or_default()
            } else {
                limit
            };
            let mut body = json!({"name": name, "role": role});
            if !limit.is_empty() {
                body["environments"] = json!(limit);
            }
            let a = client
                .call(Request::new(Method::POST, &["tokens"]).json(&body))
                .await?;
            let scope = if limit.is_empty() {
                "every environment".to_owned()
            } else {
                limit.join(", ")
            };
            secret(
                out,
                &a.body,
                &format!("the {role} token \"{name}\" for {scope}"),
            )
        }
        TokensCmd::List => {
            let Some(body) = read(client, out, Request::get(&["tokens"])).await? else {
                return Ok(super::exit::OK);
            };
            let rows: Vec<Vec<String>> = body["tokens"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let envs = list_of(&t["environments"], 5);
                    vec![
                        s(t, "id"),
                        s(t, "name"),
                        s(t, "role"),
                        if envs.is_empty() { "all".into() } else { envs },
                        s(t, "createdAt"),
                        s(t, "createdBy"),
                    ]
                })
                .collect();
            print(&table(
                &["ID", "NAME", "ROLE", "ENVIRONMENTS", "CREATED", "BY"],
                &rows,
            ))?;
            Ok(super::exit::OK)
        }
        TokensCmd::Revoke { id } => {
            client
                .call(Request::new(Method::DELETE, &["tokens", &id]))
                .await?;
            if out.json {
                print_json(&json!({"revoked": id}))?;
            } else if !out.quiet {
                print(&format!("revoked {id}\n"))?;
            }
            Ok(super::exit::OK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_wider_than_format_allows_is_padded_not_a_panic() {
        // `format!("{c:<w$}")` panics for a width above u16::MAX: a 64 KiB flag key once
        // made `flags list` exit 101.
        let wide = "k".repeat(70_000);
        let t = table(
            &["FLAG", "STATE"],
            &[
                vec![wide.clone(), "ENABLED".into()],
                vec!["grå".into(), "DISABLED".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[1], format!("{wide}  ENABLED"));
        assert_eq!(
            lines[2],
            format!("grå{}DISABLED", " ".repeat(70_000 - 3 + 2))
        );
        assert_eq!(lines[0].trim_end(), lines[0], "no trailing spaces");
    }

    #[test]
    fn keys_flagd_refuses_are_refused_before_sending() {
        for bad in ["", ".", "..", "a\u{7}b", &"k".repeat(257)] {
            assert!(flag_key(bad).is_err(), "{bad:?}");
        }
        for good in ["a/b", "100%", "?x#y", "with space", "..a", &"k".repeat(256)] {
            assert_eq!(flag_key(good).as_deref(), Ok(good));
        }
    }

    #[test]
    fn unreachable_instances_say_since_when_and_what_they_applied() {
        let i = json!({"instance": "i-2", "host": "h", "sdk": "flagd-sdk-rust/1", "state": "unreachable",
                       "unreachableSince": "2026-01-01T00:00:00Z", "appliedVersion": 7});
        assert_eq!(
            instance_line(&i),
            "i-2 (host h, flagd-sdk-rust/1): unreachable since 2026-01-01T00:00:00Z, last applied v7"
        );
        let never = json!({"instance": "i-3", "state": "unreachable", "appliedVersion": null});
        assert!(instance_line(&never).ends_with("never applied a version"));
        let up = json!({"instance": "i-1", "host": "h", "sdk": "s", "state": "connected", "appliedVersion": 6, "lastAck": "T"});
        assert_eq!(
            instance_line(&up),
            "i-1 (host h, s): on version 6, last ack T"
        );
    }
}
