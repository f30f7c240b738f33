//! The commands that talk to a running flagd: reading flags, versions and the fleet,
//! changing flags, reverting, flags as code, tokens, and waiting for the fleet.

mod admin;
mod alerts;
mod args;
mod channels;
mod output;
mod plans;
mod requests;
mod schedules;
mod triggers;

use super::client::{Client, Convergence, Failure, Request, is_unreachable};
use clap::{Args, Subcommand};
use flagd_core::{FlagSet, Strictness};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use admin::*;
pub use alerts::AlertsCmd;
use alerts::alerts;
pub use args::*;
pub use channels::ChannelsCmd;
use channels::channels;
pub use output::Out;
pub(crate) use output::*;
pub use plans::PlanCmd;
use plans::plans;
pub use requests::{RequestCmd, ReviewCmd};
use requests::{requests, reviews};
pub use schedules::ScheduleCmd;
use schedules::schedules;
pub use triggers::TriggersCmd;
use triggers::triggers;

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
            Ok(crate::exit::OK)
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
            Ok(crate::exit::OK)
        }
        C::Revert(a) => {
            let env = client.environment()?;
            if a.write.if_flag_version.is_some() {
                return Err(Failure::Usage(
                    "--if-flag-version guards a change of one flag; a revert takes --if-version"
                        .into(),
                ));
            }
            if a.to == 0 && !a.empty {
                return Err(Failure::Usage(
                    "version 0 is the empty flag set: reverting to it removes every flag; add --empty to confirm".into(),
                ));
            }
            let path = revert_path(env);
            let req = revert_request(&path, a.to, &a.reason, a.empty);
            out.change(client, env, req, &a.write).await
        }
        C::Undo(a) => {
            let env = client.environment()?;
            let path = [
                "environments",
                env,
                "versions",
                &a.version.to_string(),
                "undo",
            ];
            if a.write.if_flag_version.is_some() {
                return Err(Failure::Usage(
                    "--if-flag-version guards a change of one flag; an undo takes --if-version"
                        .into(),
                ));
            }
            if a.dry_run {
                let req = Request::new(Method::POST, &path).json(&json!({"dryRun": true}));
                let Some(body) = read(client, out, req).await? else {
                    return Ok(crate::exit::OK);
                };
                print(&undo_plan(&body, a.version))?;
                return Ok(crate::exit::OK);
            }
            out.change(
                client,
                env,
                Request::new(Method::POST, &path)
                    .json(&json!({"reason": a.reason, "force": a.force})),
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
            Ok(crate::exit::OK)
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
            Ok(crate::exit::OK)
        }
        C::Wait(w) => {
            let env = client.environment()?;
            let c = client
                .wait_for_fleet(
                    env,
                    w.version,
                    w.timeout,
                    w.allow_unreachable,
                    w.allow_unacknowledged,
                )
                .await?;
            if out.json {
                print_json(&c.to_json())?;
            }
            out.converged(env, &c)
        }
        C::Tokens(t) => tokens(client, out, t).await,
        C::Triggers(t) => triggers(client, out, t).await,
        C::Alerts(a) => alerts(client, out, a).await,
        C::Channels(c) => channels(client, out, c).await,
        C::Plan(c) => plans(client, out, c).await,
        C::Schedule(c) => schedules(client, out, c).await,
        C::Request(c) => requests(client, out, c).await,
        C::Review(c) => reviews(client, out, c).await,
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

/// The path of an environment's reverts.
pub(crate) fn revert_path(env: &str) -> [&str; 3] {
    ["environments", env, "revert"]
}

/// `POST …/revert` (at `path`, [`revert_path`]) to version `to`. Sent again if a replica dies under it, like a
/// kill switch (see `Request::repeatable`): a revert whose first attempt committed finds
/// the set already at `to`'s content, and changes nothing.
pub(crate) fn revert_request<'a>(
    path: &'a [&'a str; 3],
    to: u64,
    reason: &str,
    empty: bool,
) -> Request<'a> {
    Request::new(Method::POST, path)
        .json(&json!({"version": to, "reason": reason, "empty": empty}))
        .repeatable()
}

async fn toggle(client: &Client, out: &Out, a: ToggleArgs, action: &str) -> Done {
    let env = client.environment()?;
    let path = ["environments", env, "flags", &a.flag, action];
    // Setting a state: sent again if a replica dies under it (see `Request::repeatable`).
    let req = Request::new(Method::POST, &path)
        .json(&json!({"reason": a.reason}))
        .repeatable();
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
        return Ok(crate::exit::OK);
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
    Ok(crate::exit::OK)
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
            return Ok(crate::exit::OK);
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
        return Ok(crate::exit::OK);
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
    Ok(crate::exit::OK)
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
        return Ok(crate::exit::OK);
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

/// What `undo --dry-run` prints: each item and what would happen to it, then the later
/// versions that changed the same flags.
fn undo_plan(body: &Value, version: u64) -> String {
    let changes = body["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        return format!("v{version}: nothing to undo (what it changed is already back)\n");
    }
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| {
            let later = if c["changedLater"] == true {
                "changed again later"
            } else {
                ""
            };
            vec![s(c, "path"), s(c, "action"), later.to_owned()]
        })
        .collect();
    let mut text = format!(
        "undo v{version} (the head is v{}) would change:\n{}",
        body["version"],
        table(&["ITEM", "ACTION", ""], &rows)
    );
    for c in body["conflicts"].as_array().into_iter().flatten() {
        let later: Vec<String> = c["laterVersions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| format!("v{v}"))
            .collect();
        text.push_str(&format!(
            "{} was changed again by {}: the undo is refused without --force, which would drop that too\n",
            s(c, "path"),
            if later.is_empty() { "a later version".to_owned() } else { later.join(", ") }
        ));
    }
    text
}

#[cfg(test)]
mod tests;
