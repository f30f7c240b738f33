//! The fleet, the audit log, tokens and SDK keys.

use super::*;

pub(crate) async fn fleet(client: &Client, out: &Out) -> Done {
    let env = client.environment()?;
    let Some(body) = read(client, out, Request::get(&["environments", env, "fleet"])).await? else {
        return Ok(crate::exit::OK);
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
                if crate::client::is_unacknowledging(i) {
                    format!("sent {} (not acknowledged)", s(i, "sentVersion"))
                } else {
                    s(i, "appliedVersion")
                },
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
    Ok(crate::exit::OK)
}

/// `--since`: how long ago (`2h`, as the Unix milliseconds of two hours ago) or an RFC
/// 3339 time (passed as given); anything else is a usage error (exit 2) that shows both
/// forms.
pub(crate) fn since(text: &str) -> Result<String, String> {
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

pub(crate) async fn audit(client: &Client, out: &Out, a: AuditArgs) -> Done {
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
        return Ok(crate::exit::OK);
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
pub(crate) fn secret(out: &Out, body: &Value, what: &str) -> Done {
    if out.json {
        print_json(body)?;
        return Ok(crate::exit::OK);
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
    Ok(crate::exit::OK)
}

pub(crate) async fn tokens(client: &Client, out: &Out, t: TokensCmd) -> Done {
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
                return Ok(crate::exit::OK);
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
            Ok(crate::exit::OK)
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
            Ok(crate::exit::OK)
        }
    }
}
