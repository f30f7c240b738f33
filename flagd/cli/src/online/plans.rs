//! `flagctl plan …`: release plans run by flagd (a ramp with holds, approvals and
//! health gates), their state and history, and moving them.

use super::*;

/// `flagctl plan …`
#[derive(Debug, Subcommand)]
pub enum PlanCmd {
    /// Start a release plan for a flag of --env: its first step is applied at once.
    Create {
        /// The flag's key.
        #[arg(value_parser = flag_key)]
        flag: String,
        /// The plan as JSON (`{"variant", "steps", "gates", "gateInterval",
        /// "onFailure"}`; docs/api.md, "Release plans"), or `-` for standard input.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["variant", "step"])]
        file: Option<PathBuf>,
        /// The variant whose share the steps set.
        #[arg(long, requires = "step")]
        variant: Option<String>,
        /// A step: `PERCENT`, `PERCENT:HOLD` (`25:10m`) or `PERCENT:approval`; in
        /// order, repeated.
        #[arg(long, value_name = "PERCENT[:HOLD]", requires = "variant")]
        step: Vec<String>,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// The plans of --env, newest first.
    List {
        /// Only this flag's.
        #[arg(long, value_parser = flag_key)]
        flag: Option<String>,
        /// Only the running and paused ones.
        #[arg(long)]
        active: bool,
    },
    /// One plan and its history.
    Show {
        /// Its id.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Stop the plan's hold from counting.
    Pause(PlanMoveArgs),
    /// Go on with a paused plan (the rest of its hold, then the next step).
    Resume(PlanMoveArgs),
    /// End the current hold now.
    Skip(PlanMoveArgs),
    /// Approve a step that waits for an approval.
    Approve(PlanMoveArgs),
    /// End the plan; with --rollback, put the flag back as it was before it.
    Abort {
        #[command(flatten)]
        plan: PlanMoveArgs,
        /// Restore the flag's definition from before the plan.
        #[arg(long)]
        rollback: bool,
    },
}

/// Which plan to move, and why.
#[derive(Debug, Args)]
pub struct PlanMoveArgs {
    /// Its id.
    #[arg(allow_hyphen_values = true)]
    id: String,
    /// Why, for the audit log.
    #[arg(long)]
    reason: Option<String>,
}

/// `PERCENT[:HOLD]` as a step of the API.
fn step_of(text: &str) -> Result<Value, Failure> {
    let (percent, hold) = match text.split_once(':') {
        Some((p, h)) => (p, Some(h)),
        None => (text, None),
    };
    let percent: f64 = percent.trim().parse().map_err(|_| {
        Failure::Usage(format!(
            "--step {text}: PERCENT[:HOLD], such as 5:10m, 25:approval or 100"
        ))
    })?;
    let mut step = json!({"percent": percent});
    if let Some(h) = hold {
        step["hold"] = json!(h.trim());
    }
    Ok(step)
}

fn read_plan(file: &PathBuf) -> Result<Value, Failure> {
    let text = if file.as_os_str() == "-" {
        let mut t = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).map_err(|e| io(&e))?;
        t
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::Failed(format!("{}: {e}", file.display())))?
    };
    serde_json::from_str(&text)
        .map_err(|e| Failure::Failed(format!("{}: not JSON: {e}", file.display())))
}

/// One line about a plan.
fn line(p: &Value) -> String {
    let steps = p["steps"].as_array().map_or(0, Vec::len);
    let step = p["step"].as_u64().map_or(0, |s| s + 1);
    let mut l = format!(
        "plan {} of {}: {}, step {step} of {steps}",
        s(p, "id"),
        s(p, "flag"),
        s(p, "state")
    );
    if p["awaitingApproval"] == true {
        l.push_str(", waiting for an approval");
    } else if let Some(at) = p["nextActionAt"].as_str() {
        l.push_str(&format!(", next step at {at}"));
    }
    if let Some(h) = p["held"].as_str() {
        l.push_str(&format!(", held: {h}"));
    }
    l
}

pub(crate) async fn plans(client: &Client, out: &Out, c: PlanCmd) -> Done {
    let env = client.environment()?;
    let (id, action, reason, rollback) = match c {
        PlanCmd::Create {
            flag,
            file,
            variant,
            step,
            reason,
        } => {
            let mut body = match (&file, &variant) {
                (Some(f), _) => read_plan(f)?,
                (None, Some(v)) => json!({
                    "variant": v,
                    "steps": step.iter().map(|s| step_of(s)).collect::<Result<Vec<_>, _>>()?,
                }),
                (None, None) => {
                    return Err(Failure::Usage(
                        "give the plan: --file plan.json, or --variant and --step".into(),
                    ));
                }
            };
            if let (Some(r), Some(o)) = (reason, body.as_object_mut()) {
                o.insert("reason".into(), json!(r));
            }
            let path = ["environments", env, "flags", &flag, "plans"];
            let a = client
                .call(Request::new(Method::POST, &path).json(&body))
                .await?;
            let p = &a.body["plan"];
            if out.json {
                print_json(&a.body)?;
            } else if out.quiet {
                print(&format!("{}\n", s(p, "id")))?;
            } else {
                print(&format!(
                    "{} (version {})\n",
                    line(p),
                    s(&a.body["change"], "version")
                ))?;
            }
            return Ok(crate::exit::OK);
        }
        PlanCmd::List { flag, active } => {
            let mut q = Vec::new();
            if let Some(f) = flag {
                q.push(("flag", f));
            }
            if active {
                q.push(("active", "true".to_owned()));
            }
            let path = ["environments", env, "plans"];
            if let Some(body) = read(client, out, Request::get(&path).query(&q)).await? {
                let rows: Vec<Vec<String>> = body["plans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        vec![
                            s(p, "id"),
                            s(p, "flag"),
                            s(p, "state"),
                            format!(
                                "{}/{}",
                                p["step"].as_u64().map_or(0, |s| s + 1),
                                p["steps"].as_array().map_or(0, Vec::len)
                            ),
                            s(p, "nextActionAt"),
                            s(p, "createdBy"),
                        ]
                    })
                    .collect();
                print(&table(
                    &["ID", "FLAG", "STATE", "STEP", "NEXT", "BY"],
                    &rows,
                ))?;
            }
            return Ok(crate::exit::OK);
        }
        PlanCmd::Show { id } => {
            let path = ["environments", env, "plans", &id];
            if let Some(body) = read(client, out, Request::get(&path)).await? {
                let mut text = format!("{}\n", line(&body["plan"]));
                for e in body["events"].as_array().into_iter().flatten() {
                    text.push_str(&format!(
                        "  {} {} step {} {}{} {}\n",
                        s(e, "at"),
                        s(e, "event"),
                        e["step"].as_u64().map_or(0, |s| s + 1),
                        e["version"]
                            .as_u64()
                            .map(|v| format!("v{v} "))
                            .unwrap_or_default(),
                        s(e, "actor"),
                        e["detail"].as_str().unwrap_or_default()
                    ));
                }
                print(&text)?;
            }
            return Ok(crate::exit::OK);
        }
        PlanCmd::Pause(a) => (a.id, "pause", a.reason, false),
        PlanCmd::Resume(a) => (a.id, "resume", a.reason, false),
        PlanCmd::Skip(a) => (a.id, "skip", a.reason, false),
        PlanCmd::Approve(a) => (a.id, "approve", a.reason, false),
        PlanCmd::Abort { plan, rollback } => (plan.id, "abort", plan.reason, rollback),
    };
    let body = json!({"reason": reason, "rollback": rollback});
    let path = ["environments", env, "plans", &id, action];
    let a = client
        .call(Request::new(Method::POST, &path).json(&body))
        .await?;
    if out.json {
        print_json(&a.body)?;
    } else if !out.quiet {
        print(&format!("{}\n", line(&a.body["plan"])))?;
    }
    Ok(crate::exit::OK)
}
