//! `flagctl alerts …`: what Alertmanager's alerts may do to an environment (its alert
//! policy), and what they did.

use super::*;

/// `flagctl alerts …`
#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// What alerts did in --env, newest first: each firing's action and outcome
    /// (applied, unchanged, refused, stale, resolved).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// --env's alert policy.
    Policy,
    /// Set --env's alert policy (admin); what is not given takes its default.
    SetPolicy {
        /// Turn alerts off for this environment (every action refused and recorded).
        #[arg(long)]
        disabled: bool,
        /// The actions alerts may take: disable, revert (default: disable).
        #[arg(long, value_delimiter = ',', value_parser = ["disable", "revert"])]
        actions: Option<Vec<String>>,
        /// The flags alerts may disable, or `*` for any (default: any).
        #[arg(long, value_delimiter = ',')]
        flags: Option<Vec<String>>,
        /// Last known good is the head this long before the alert began (default 10m).
        #[arg(long, value_parser = humantime::parse_duration)]
        lookback: Option<Duration>,
    },
}

fn print_policy(p: &Value) -> Result<(), Failure> {
    let list = |k: &str| {
        p[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    print(&format!(
        "enabled: {}\nactions: {}\nflags:   {}\nlookback: {}s\nset by:  {}\n",
        p["enabled"],
        list("actions"),
        list("flags"),
        p["lookbackSeconds"],
        match (p["updatedBy"].as_str(), p["updatedAt"].as_str()) {
            (Some(by), Some(at)) => format!("{by} at {at}"),
            _ => "nobody (the defaults)".into(),
        }
    ))
}

pub(crate) async fn alerts(client: &Client, out: &Out, cmd: AlertsCmd) -> Done {
    let env = client.environment()?;
    match cmd {
        AlertsCmd::List { limit } => {
            let q = [("limit", limit.to_string())];
            let path = ["environments", env, "alerts"];
            let Some(body) = read(client, out, Request::get(&path).query(&q)).await? else {
                return Ok(crate::exit::OK);
            };
            let rows: Vec<Vec<String>> = body["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    vec![
                        s(e, "receivedAt"),
                        s(e, "alertname"),
                        s(e, "action"),
                        s(e, "target"),
                        s(e, "outcome"),
                        e["version"]
                            .as_u64()
                            .map(|v| format!("v{v}"))
                            .unwrap_or_default(),
                        s(e, "detail"),
                    ]
                })
                .collect();
            print(&table(
                &[
                    "RECEIVED", "ALERT", "ACTION", "TARGET", "OUTCOME", "VERSION", "DETAIL",
                ],
                &rows,
            ))?;
            Ok(crate::exit::OK)
        }
        AlertsCmd::Policy => {
            let path = ["environments", env, "alert-policy"];
            let Some(body) = read(client, out, Request::get(&path)).await? else {
                return Ok(crate::exit::OK);
            };
            print_policy(&body["policy"])?;
            Ok(crate::exit::OK)
        }
        AlertsCmd::SetPolicy {
            disabled,
            actions,
            flags,
            lookback,
        } => {
            let mut body = json!({"enabled": !disabled});
            if let Some(a) = actions {
                body["actions"] = json!(a);
            }
            if let Some(f) = flags {
                body["flags"] = json!(f);
            }
            if let Some(l) = lookback {
                body["lookbackSeconds"] = json!(l.as_secs());
            }
            let a = client
                .call(Request::new(Method::PUT, &["environments", env, "alert-policy"]).json(&body))
                .await?;
            if out.json {
                print_json(&a.body)?;
            } else if !out.quiet {
                print_policy(&a.body["policy"])?;
            }
            Ok(crate::exit::OK)
        }
    }
}
