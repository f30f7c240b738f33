//! `flagctl schedule …`: changes applied later by flagd (a kill switch, an enable, a
//! rollout step, an import, a revert), against the version they were scheduled on.

use super::*;

/// `flagctl schedule …`
#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Schedule a change of --env: `disable FLAG`, `enable FLAG`, `rollout FLAG
    /// --variant V --percent P`, `import FILE`, `revert --to N`.
    Create {
        /// `disable`, `enable`, `rollout`, `import` or `revert`.
        #[arg(value_parser = ["disable", "enable", "rollout", "import", "revert"])]
        action: String,
        /// The flag (disable, enable, rollout) or the flagd document (import).
        target: Option<String>,
        /// When: an RFC 3339 time (`2026-12-24T09:00:00Z`).
        #[arg(long, conflicts_with = "in", required_unless_present = "in")]
        at: Option<String>,
        /// Or in how long (`10m`, `2h`).
        #[arg(long = "in", value_name = "DURATION")]
        r#in: Option<String>,
        /// The variant a rollout sets.
        #[arg(long)]
        variant: Option<String>,
        /// Its share, 0 to 100.
        #[arg(long)]
        percent: Option<f64>,
        /// The version a revert goes back to.
        #[arg(long, value_name = "N")]
        to: Option<u64>,
        /// Why, for the audit log (required for disable, enable and revert).
        #[arg(long)]
        reason: Option<String>,
    },
    /// The scheduled changes of --env (with --pending, only those still to come).
    List {
        /// Only the pending ones, soonest first.
        #[arg(long)]
        pending: bool,
    },
    /// Cancel a pending change.
    Cancel {
        /// Its id.
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
}

fn line(c: &Value) -> String {
    let what = match (c["flag"].as_str(), c["action"].as_str()) {
        (Some(f), Some(a)) => format!("{a} {f}"),
        (None, Some(a)) => a.to_owned(),
        _ => String::new(),
    };
    format!(
        "scheduled change {} ({what}) at {}: {}{}",
        s(c, "id"),
        s(c, "at"),
        s(c, "state"),
        c["detail"]
            .as_str()
            .map(|d| format!(", {d}"))
            .unwrap_or_default()
    )
}

pub(crate) async fn schedules(client: &Client, out: &Out, c: ScheduleCmd) -> Done {
    let env = client.environment()?;
    let answer = match c {
        ScheduleCmd::Create {
            action,
            target,
            at,
            r#in,
            variant,
            percent,
            to,
            reason,
        } => {
            let mut body = json!({"action": action, "reason": reason});
            match (&at, &r#in) {
                (Some(t), _) => body["at"] = json!(t),
                (None, Some(d)) => body["in"] = json!(d),
                (None, None) => {
                    return Err(Failure::Usage("give --at TIME or --in DURATION".into()));
                }
            }
            match action.as_str() {
                "import" => {
                    let file = target.ok_or_else(|| {
                        Failure::Usage("schedule create import FILE: the flagd document".into())
                    })?;
                    let text = std::fs::read_to_string(&file)
                        .map_err(|e| Failure::Failed(format!("{file}: {e}")))?;
                    body["document"] = serde_json::from_str(&text)
                        .map_err(|e| Failure::Failed(format!("{file}: not JSON: {e}")))?;
                }
                "revert" => {
                    let to = to.ok_or_else(|| {
                        Failure::Usage("schedule create revert --to N: the version".into())
                    })?;
                    body["version"] = json!(to);
                }
                _ => {
                    let flag = target.ok_or_else(|| {
                        Failure::Usage(format!("schedule create {action} FLAG: the flag"))
                    })?;
                    body["flag"] = json!(flag);
                    if let Some(v) = variant {
                        body["variant"] = json!(v);
                    }
                    if let Some(p) = percent {
                        body["percent"] = json!(p);
                    }
                }
            }
            client
                .call(Request::new(Method::POST, &["environments", env, "schedules"]).json(&body))
                .await?
                .body
        }
        ScheduleCmd::List { pending } => {
            let q: Vec<(&str, String)> = if pending {
                vec![("pending", "true".to_owned())]
            } else {
                Vec::new()
            };
            let path = ["environments", env, "schedules"];
            if let Some(body) = read(client, out, Request::get(&path).query(&q)).await? {
                let rows: Vec<Vec<String>> = body["schedules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        vec![
                            s(c, "id"),
                            s(c, "at"),
                            s(c, "action"),
                            c["flag"].as_str().unwrap_or("-").to_owned(),
                            s(c, "state"),
                            s(c, "createdBy"),
                        ]
                    })
                    .collect();
                print(&table(
                    &["ID", "AT", "ACTION", "FLAG", "STATE", "BY"],
                    &rows,
                ))?;
            }
            return Ok(crate::exit::OK);
        }
        ScheduleCmd::Cancel { id, reason } => {
            let path = ["environments", env, "schedules", &id, "cancel"];
            client
                .call(Request::new(Method::POST, &path).json(&json!({"reason": reason})))
                .await?
                .body
        }
    };
    let c = &answer["schedule"];
    if out.json {
        print_json(&answer)?;
    } else if out.quiet {
        print(&format!("{}\n", s(c, "id")))?;
    } else {
        print(&format!("{}\n", line(c)))?;
    }
    Ok(crate::exit::OK)
}
