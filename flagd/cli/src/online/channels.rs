//! `flagctl channels …`: where an environment's changes are announced (Slack, Teams,
//! Feishu, DingTalk, WeCom, a signed webhook), a test message, the delivery history.

use super::*;

/// `flagctl channels …`
#[derive(Debug, Subcommand)]
pub enum ChannelsCmd {
    /// Announce the changes of --env on a channel.
    Create {
        /// `slack`, `teams`, `feishu`, `dingtalk`, `wecom` or `webhook`.
        #[arg(long, value_parser = ["slack", "teams", "feishu", "dingtalk", "wecom", "webhook"])]
        kind: String,
        /// The incoming-webhook URL (a secret for most vendors: never shown again).
        /// Not `--url`, which is flagd's.
        #[arg(long, value_name = "URL")]
        webhook_url: String,
        /// The signing secret (Feishu, DingTalk; `whsec_…` for a webhook), read from
        /// this environment variable rather than the command line (visible in `ps`).
        #[arg(long, value_name = "VARIABLE")]
        secret_env: Option<String>,
        /// Events, comma-separated: kill-switch, revert, undo, automatic, rollout,
        /// refused, not-converged, plan, change, approval (default: all but rollout and change).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// A name (default: the kind and the URL's host).
        #[arg(long)]
        name: Option<String>,
        /// How long the follow-up waits for the fleet to apply a version (default 30s).
        #[arg(long)]
        converge_timeout: Option<String>,
    },
    /// The channels of --env (never their secrets) and their last delivery.
    List,
    /// Send a test message now; exits 1 if the receiver did not take it.
    Test {
        /// Its id (see `channels list`).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// A channel's messages, newest first, with every attempt.
    Deliveries {
        /// Its id.
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Stop announcing on a channel.
    Delete {
        /// Its id.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

pub(crate) async fn channels(client: &Client, out: &Out, c: ChannelsCmd) -> Done {
    let env = client.environment()?;
    match c {
        ChannelsCmd::Create {
            kind,
            webhook_url,
            secret_env,
            events,
            name,
            converge_timeout,
        } => {
            let mut body = json!({"kind": kind, "url": webhook_url});
            if let Some(var) = secret_env {
                let secret = std::env::var(&var).map_err(|_| {
                    Failure::Failed(format!("--secret-env: the variable {var} is not set"))
                })?;
                body["secret"] = json!(secret);
            }
            if !events.is_empty() {
                body["events"] = json!(events);
            }
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(t) = converge_timeout {
                body["convergeTimeout"] = json!(t);
            }
            let a = client
                .call(Request::new(Method::POST, &["environments", env, "channels"]).json(&body))
                .await?;
            let ch = &a.body["channel"];
            if out.json {
                print_json(&a.body)?;
            } else if out.quiet {
                print(&format!("{}\n", s(ch, "id")))?;
            } else {
                print(&format!(
                    "created channel {} ({} {}) in {env}: {}\n",
                    s(ch, "id"),
                    s(ch, "kind"),
                    s(ch, "target"),
                    events_of(ch)
                ))?;
            }
            Ok(crate::exit::OK)
        }
        ChannelsCmd::List => {
            let path = ["environments", env, "channels"];
            let Some(body) = read(client, out, Request::get(&path)).await? else {
                return Ok(crate::exit::OK);
            };
            let rows: Vec<Vec<String>> = body["channels"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let last = &c["lastDelivery"];
                    let last = if last.is_null() {
                        "never".to_owned()
                    } else {
                        format!(
                            "{} {} {}",
                            s(last, "status"),
                            s(last, "event"),
                            s(last, "at")
                        )
                    };
                    vec![
                        s(c, "id"),
                        s(c, "name"),
                        s(c, "kind"),
                        s(c, "target"),
                        events_of(c),
                        last,
                    ]
                })
                .collect();
            print(&table(
                &["ID", "NAME", "KIND", "TARGET", "EVENTS", "LAST DELIVERY"],
                &rows,
            ))?;
            Ok(crate::exit::OK)
        }
        ChannelsCmd::Test { id } => {
            let a = client
                .call(Request::new(
                    Method::POST,
                    &["environments", env, "channels", &id, "test"],
                ))
                .await?;
            let ok = a.body["ok"].as_bool() == Some(true);
            if out.json {
                print_json(&a.body)?;
            } else if ok {
                print(&format!(
                    "delivered: the receiver answered {}\n",
                    s(&a.body, "status")
                ))?;
            } else {
                note(&format!(
                    "flagctl: not delivered: {} (status {}, answer {})",
                    s(&a.body, "error"),
                    s(&a.body, "status"),
                    s(&a.body, "body")
                ));
            }
            Ok(if ok {
                crate::exit::OK
            } else {
                crate::exit::FAILED
            })
        }
        ChannelsCmd::Deliveries { id, limit } => {
            let q = [("limit", limit.to_string())];
            let path = ["environments", env, "channels", &id, "deliveries"];
            let Some(body) = read(client, out, Request::get(&path).query(&q)).await? else {
                return Ok(crate::exit::OK);
            };
            let rows: Vec<Vec<String>> = body["deliveries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let title = d["payload"]["title"].as_str().unwrap_or_default();
                    let last = match (&d["lastStatus"], &d["lastError"]) {
                        (Value::Null, Value::Null) => "-".to_owned(),
                        (st, Value::Null) => st.to_string(),
                        (Value::Null, e) => e.as_str().unwrap_or_default().to_owned(),
                        (st, e) => format!("{st}: {}", e.as_str().unwrap_or_default()),
                    };
                    vec![
                        s(d, "createdAt"),
                        s(d, "event"),
                        s(d, "status"),
                        s(d, "attempts"),
                        last,
                        title.to_owned(),
                    ]
                })
                .collect();
            print(&table(
                &[
                    "AT",
                    "EVENT",
                    "STATUS",
                    "ATTEMPTS",
                    "LAST ANSWER",
                    "MESSAGE",
                ],
                &rows,
            ))?;
            Ok(crate::exit::OK)
        }
        ChannelsCmd::Delete { id } => {
            client
                .call(Request::new(
                    Method::DELETE,
                    &["environments", env, "channels", &id],
                ))
                .await?;
            if out.json {
                print_json(&json!({"deleted": id}))?;
            } else if !out.quiet {
                print(&format!("deleted {id}\n"))?;
            }
            Ok(crate::exit::OK)
        }
    }
}

fn events_of(c: &Value) -> String {
    c["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(",")
}
