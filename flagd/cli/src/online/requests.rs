//! `flagctl request …` and `flagctl review …`: approvals of a protected environment.
//! A change becomes a change request that people other than its author approve; a
//! break-glass change (kill switch, revert, undo) opens a review to acknowledge.
//! Reviewing takes a person: a token a person created (in the admin UI, signed in as
//! themselves) reviews in their name; a token created by another token names no one.

use super::*;

/// `flagctl request …`
#[derive(Debug, Subcommand)]
pub enum RequestCmd {
    /// Propose a change to --env: flags to set (`--set KEY=FILE`) or delete
    /// (`--delete KEY`), a whole flagd document (`--document FILE`), or a release plan
    /// (`--plan FILE`, `{"flag", "variant", "steps", ...}`). Based on the head now.
    Create {
        /// A one-line summary.
        #[arg(long)]
        title: String,
        /// A flag and the file of its new definition (JSON); repeat it.
        #[arg(long, value_name = "KEY=FILE")]
        set: Vec<String>,
        /// A flag to delete; repeat it.
        #[arg(long, value_name = "KEY")]
        delete: Vec<String>,
        /// A whole flagd document.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["set", "delete", "plan"])]
        document: Option<PathBuf>,
        /// A release plan (JSON with its "flag").
        #[arg(long, value_name = "FILE", conflicts_with_all = ["set", "delete"])]
        plan: Option<PathBuf>,
        /// Wait for `request apply` instead of applying once approved.
        #[arg(long)]
        no_auto_apply: bool,
    },
    /// The change requests of --env, newest first.
    List {
        /// Only those in this state: open, applied, rejected, stale, withdrawn.
        #[arg(long)]
        state: Option<String>,
    },
    /// One request: its change, diff and history.
    Show {
        /// Its id.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Approve a request's current revision (not your own).
    Approve(RequestMoveArgs),
    /// Reject it, saying why.
    Reject(RequestMoveArgs),
    /// Comment on it.
    Comment(RequestMoveArgs),
    /// Apply your approved request.
    Apply(RequestMoveArgs),
    /// Withdraw your request.
    Withdraw(RequestMoveArgs),
    /// Show --env's approval policy, or change it (admin).
    Policy {
        /// Protect the environment (`true`) or not (`false`).
        #[arg(long)]
        protected: Option<bool>,
        /// How many approvals a request needs (1 to 10).
        #[arg(long)]
        approvals: Option<u64>,
    },
}

/// Which request, and a comment.
#[derive(Debug, Args)]
pub struct RequestMoveArgs {
    /// Its id.
    #[arg(allow_hyphen_values = true)]
    id: String,
    /// A comment (required to reject or comment).
    #[arg(long, short = 'm')]
    comment: Option<String>,
}

/// `flagctl review …`
#[derive(Debug, Subcommand)]
pub enum ReviewCmd {
    /// The break-glass changes of --env (with --open, those not acknowledged).
    List {
        /// Only those still to acknowledge.
        #[arg(long)]
        open: bool,
    },
    /// Acknowledge one (not your own).
    Ack {
        /// Its id (the version it made).
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// What you noted (a post-mortem's link, say).
        #[arg(long)]
        note: Option<String>,
    },
}

fn json_file(path: &std::path::Path) -> Result<Value, Failure> {
    let text = if path == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Failure::Failed(format!("standard input: {e}")))?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Failure::Failed(format!("{}: {e}", path.display())))?
    };
    serde_json::from_str(&text)
        .map_err(|e| Failure::Failed(format!("{}: not JSON: {e}", path.display())))
}

fn request_line(r: &Value) -> String {
    let approved = r["approvedBy"].as_array().map_or(0, Vec::len);
    format!(
        "change request {} \"{}\" by {}: {} ({approved} of {} approvals){}",
        s(r, "id"),
        s(r, "title"),
        s(r, "author"),
        s(r, "state"),
        r["approvalsRequired"],
        r["appliedVersion"]
            .as_u64()
            .map(|v| format!(", applied as version {v}"))
            .unwrap_or_default()
    )
}

pub(crate) async fn requests(client: &Client, out: &Out, c: RequestCmd) -> Done {
    let env = client.environment()?;
    let answer = match c {
        RequestCmd::Create {
            title,
            set,
            delete,
            document,
            plan,
            no_auto_apply,
        } => {
            let change = if let Some(d) = document {
                json!({"document": json_file(&d)?})
            } else if let Some(p) = plan {
                json!({"plan": json_file(&p)?})
            } else {
                let mut flags = serde_json::Map::new();
                for pair in &set {
                    let (key, file) = pair
                        .split_once('=')
                        .ok_or_else(|| Failure::Usage(format!("--set {pair}: KEY=FILE")))?;
                    flags.insert(key.to_owned(), json_file(std::path::Path::new(file))?);
                }
                for key in delete {
                    flags.insert(key, Value::Null);
                }
                if flags.is_empty() {
                    return Err(Failure::Usage(
                        "give --set KEY=FILE, --delete KEY, --document FILE or --plan FILE".into(),
                    ));
                }
                json!({"flags": flags})
            };
            let body = json!({"title": title, "change": change, "autoApply": !no_auto_apply});
            client
                .call(
                    Request::new(Method::POST, &["environments", env, "change-requests"])
                        .json(&body),
                )
                .await?
                .body
        }
        RequestCmd::List { state } => {
            let q: Vec<(&str, String)> = state.map(|s| ("state", s)).into_iter().collect();
            let path = ["environments", env, "change-requests"];
            if let Some(body) = read(client, out, Request::get(&path).query(&q)).await? {
                let rows: Vec<Vec<String>> = body["requests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        vec![
                            s(r, "id"),
                            s(r, "state"),
                            format!(
                                "{}/{}",
                                r["approvedBy"].as_array().map_or(0, Vec::len),
                                r["approvalsRequired"]
                            ),
                            s(r, "author"),
                            s(r, "title"),
                        ]
                    })
                    .collect();
                print(&table(
                    &["ID", "STATE", "APPROVALS", "AUTHOR", "TITLE"],
                    &rows,
                ))?;
            }
            return Ok(crate::exit::OK);
        }
        RequestCmd::Show { id } => {
            let a = client
                .call(Request::get(&["environments", env, "change-requests", &id]))
                .await?;
            if out.json {
                print_json(&a.body)?;
                return Ok(crate::exit::OK);
            }
            let r = &a.body["request"];
            let mut text = format!("{}\n", request_line(r));
            for d in a.body["diff"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "  {}: {} → {}\n",
                    s(d, "key"),
                    d["before"],
                    d["after"]
                ));
            }
            for e in r["events"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "  {} {} {} (revision {}){}\n",
                    s(e, "at"),
                    s(e, "actor"),
                    s(e, "action"),
                    e["revision"],
                    e["comment"]
                        .as_str()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                ));
            }
            print(&text)?;
            return Ok(crate::exit::OK);
        }
        RequestCmd::Approve(m) => act(client, env, "approve", m).await?,
        RequestCmd::Reject(m) => act(client, env, "reject", m).await?,
        RequestCmd::Comment(m) => act(client, env, "comment", m).await?,
        RequestCmd::Apply(m) => act(client, env, "apply", m).await?,
        RequestCmd::Withdraw(m) => act(client, env, "withdraw", m).await?,
        RequestCmd::Policy {
            protected,
            approvals,
        } => {
            let path = ["environments", env, "approval-policy"];
            let mut p = client.call(Request::get(&path)).await?.body["policy"].clone();
            if protected.is_some() || approvals.is_some() {
                if let Some(x) = protected {
                    p["protected"] = json!(x);
                }
                if let Some(n) = approvals {
                    p["approvals"] = json!(n);
                }
                p = client
                    .call(Request::new(Method::PUT, &path).json(&p))
                    .await?
                    .body["policy"]
                    .clone();
            }
            if out.json {
                print_json(&json!({"policy": p}))?;
            } else if !out.quiet {
                print(&format!(
                    "{env}: {} ({} approval{} per change request)\n",
                    if p["protected"] == true {
                        "protected"
                    } else {
                        "not protected"
                    },
                    p["approvals"],
                    if p["approvals"] == 1 { "" } else { "s" }
                ))?;
            }
            return Ok(crate::exit::OK);
        }
    };
    let r = &answer["request"];
    if out.json {
        print_json(&answer)?;
    } else if out.quiet {
        print(&format!("{}\n", s(r, "id")))?;
    } else {
        print(&format!("{}\n", request_line(r)))?;
    }
    Ok(crate::exit::OK)
}

async fn act(
    client: &Client,
    env: &str,
    action: &str,
    m: RequestMoveArgs,
) -> Result<Value, Failure> {
    let path = ["environments", env, "change-requests", &m.id, action];
    Ok(client
        .call(Request::new(Method::POST, &path).json(&json!({"comment": m.comment})))
        .await?
        .body)
}

pub(crate) async fn reviews(client: &Client, out: &Out, c: ReviewCmd) -> Done {
    let env = client.environment()?;
    match c {
        ReviewCmd::List { open } => {
            let q: Vec<(&str, String)> = if open {
                vec![("open", "true".to_owned())]
            } else {
                Vec::new()
            };
            let path = ["environments", env, "reviews"];
            if let Some(body) = read(client, out, Request::get(&path).query(&q)).await? {
                let rows: Vec<Vec<String>> = body["reviews"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        vec![
                            s(r, "id"),
                            s(r, "createdAt"),
                            s(r, "actor"),
                            format!("{} {}", s(r, "action"), s(r, "target")),
                            s(r, "reason"),
                            r["acknowledgedBy"].as_str().unwrap_or("-").to_owned(),
                        ]
                    })
                    .collect();
                print(&table(
                    &["ID", "AT", "BY", "WHAT", "WHY", "ACKNOWLEDGED"],
                    &rows,
                ))?;
            }
        }
        ReviewCmd::Ack { id, note } => {
            let path = ["environments", env, "reviews", &id, "acknowledge"];
            let a = client
                .call(Request::new(Method::POST, &path).json(&json!({"note": note})))
                .await?
                .body;
            if out.json {
                print_json(&a)?;
            } else if !out.quiet {
                print(&format!(
                    "review {} ({} by {}) acknowledged by {}\n",
                    s(&a["review"], "id"),
                    s(&a["review"], "action"),
                    s(&a["review"], "actor"),
                    s(&a["review"], "acknowledgedBy")
                ))?;
            }
        }
    }
    Ok(crate::exit::OK)
}
