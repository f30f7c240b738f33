//! The commands that talk to a running flagd: reading flags, versions and the fleet,
//! changing flags, reverting, flags as code, tokens, and waiting for the fleet.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use flagd_core::{FlagSet, Strictness};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, Convergence, Failure, Request};

/// What `--wait` and `--if-version` add to a change.
#[derive(Debug, Args)]
pub struct WriteOpts {
    /// Refuse the change (exit 3) unless the environment is still at version N: a
    /// pipeline never overwrites what someone changed under it.
    #[arg(long, value_name = "N")]
    if_version: Option<u64>,
    /// Return only when every SDK instance connected to flagd has applied the new
    /// version; exit 1 after --timeout, naming the instances that lag.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, e.g. 30s or 2m.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, requires = "wait")]
    timeout: Duration,
}

/// `flagctl flags …`
#[derive(Debug, Subcommand)]
pub enum FlagsCmd {
    /// The environment's flags: state, default variant, split, and the last change.
    List,
    /// One flag's definition, in flagd's JSON format.
    Get {
        /// The flag's key.
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
        #[arg(long)]
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
    /// The version to wait for (default: the head).
    #[arg(long, value_name = "N")]
    version: Option<u64>,
    /// How long to wait, e.g. 30s or 2m.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// `flagctl audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries about this flag.
    #[arg(long)]
    flag: Option<String>,
    /// Only what this token (by name) did.
    #[arg(long)]
    actor: Option<String>,
    /// One action (`flag.disable`), or a family ending in `.` (`flag.`).
    #[arg(long)]
    action: Option<String>,
    /// Since a time: RFC 3339, or how long ago, e.g. 30m or 2h.
    #[arg(long)]
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
            if i + 1 == widths.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
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
        Some(_) => match crate::rollout::split(def) {
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
        let convergence = if opts.wait {
            Some(client.wait_for_fleet(env, version, opts.timeout).await?)
        } else {
            None
        };
        if self.json {
            let mut v = body.clone();
            if let (Value::Object(o), Some(c)) = (&mut v, &convergence) {
                o.insert("fleet".into(), c.to_json());
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
        match convergence {
            Some(c) => self.converged(env, &c),
            None => Ok(super::exit::OK),
        }
    }

    /// Reports where the fleet stands; exit 1 if it has not converged.
    fn converged(&self, env: &str, c: &Convergence) -> Done {
        let ms = format!("{:.1}", c.waited.as_secs_f64() * 1000.0);
        if c.converged() {
            if !self.json && !self.quiet {
                let text = if c.total == 0 {
                    format!(
                        "{env}: no SDK instance is connected to this flagd; nothing to wait for\n"
                    )
                } else {
                    let who = if c.total == 1 {
                        "the one SDK instance".to_owned()
                    } else {
                        format!("all {} SDK instances", c.total)
                    };
                    format!("{env}: {who} applied version {} ({ms} ms)\n", c.version)
                };
                print(&text)?;
            }
            return Ok(super::exit::OK);
        }
        let mut text = format!(
            "{env}: {} of {} did not apply version {} within {ms} ms:",
            c.lagging.len(),
            plural(c.total, "SDK instance"),
            c.version
        );
        for i in &c.lagging {
            text.push_str(&format!(
                "\n  {} (host {}, {}): on version {}, last ack {}",
                s(i, "instance"),
                s(i, "host"),
                s(i, "sdk"),
                s(i, "appliedVersion"),
                s(i, "lastAck"),
            ));
        }
        note(&format!("flagctl: {text}"));
        Ok(super::exit::FAILED)
    }
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
            out.change(
                client,
                env,
                Request::new(Method::POST, &["environments", env, "revert"])
                    .json(&json!({"version": a.to, "reason": a.reason})),
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
        C::Fleet => fleet(client, out).await,
        C::Wait(w) => {
            let env = client.environment()?;
            let version = match w.version {
                Some(v) => v,
                None => head(client, env).await?,
            };
            let c = client.wait_for_fleet(env, version, w.timeout).await?;
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
        let changes = Value::Array(crate::http::diff(
            &crate::store::items_in(&current.body),
            &crate::store::items_in(&set.to_json()),
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
    let rows: Vec<Vec<String>> = body["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            vec![
                s(i, "instance"),
                s(i, "host"),
                s(i, "sdk"),
                s(i, "appliedVersion"),
                s(i, "lastAck"),
                s(i, "keyName"),
            ]
        })
        .collect();
    let mut text = format!(
        "{env} at version {}: {} connected, {} on it\n",
        s(&body, "version"),
        plural(rows.len(), "SDK instance"),
        s(&body, "onVersion"),
    );
    if !rows.is_empty() {
        text.push_str(&table(
            &["INSTANCE", "HOST", "SDK", "VERSION", "LAST ACK", "SDK KEY"],
            &rows,
        ));
    }
    print(&text)?;
    Ok(super::exit::OK)
}

/// `--since 2h` as the Unix milliseconds of two hours ago; anything else as given
/// (flagd reads RFC 3339 and milliseconds, and names the parameter when it cannot).
fn since(text: &str) -> String {
    let ago = humantime::parse_duration(text)
        .ok()
        .and_then(|d| std::time::SystemTime::now().checked_sub(d))
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    ago.map_or_else(|| text.to_owned(), |t| t.as_millis().to_string())
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
        ("since", a.since.as_deref().map(since)),
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
