//! `flagctl triggers …`: secret URLs a monitoring tool POSTs to, each doing one action on
//! one flag.

use super::*;

/// `flagctl triggers …`
#[derive(Debug, Subcommand)]
pub enum TriggersCmd {
    /// Create a trigger URL for --env and print it, once: whoever POSTs to it disables
    /// (or enables) that one flag, with no token.
    Create {
        /// The flag it acts on.
        #[arg(long)]
        flag: String,
        /// `disable` (the kill switch) or `enable`.
        #[arg(long, value_parser = ["disable", "enable"])]
        action: String,
        /// A name: its changes are made by `trigger:<name>` (default: ACTION-FLAG).
        #[arg(long)]
        name: Option<String>,
    },
    /// The trigger URLs of --env (never the URLs themselves).
    List,
    /// Revoke a trigger URL: it stops working at once.
    Revoke {
        /// Its id (see `triggers list`).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

pub(crate) async fn triggers(client: &Client, out: &Out, t: TriggersCmd) -> Done {
    let env = client.environment()?;
    match t {
        TriggersCmd::Create { flag, action, name } => {
            let mut body = json!({"flag": flag, "action": action});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let a = client
                .call(Request::new(Method::POST, &["environments", env, "triggers"]).json(&body))
                .await?;
            if out.json {
                print_json(&a.body)?;
                return Ok(crate::exit::OK);
            }
            let url = a.body["url"]
                .as_str()
                .ok_or_else(|| Failure::Failed("flagd's answer has no URL".into()))?;
            print(&format!("{url}\n"))?;
            if !out.quiet {
                note(&format!(
                    "flagctl: created trigger \"{}\" ({action} {flag} in {env}); the URL above is shown only this once: POST to it to fire",
                    s(&a.body["trigger"], "name")
                ));
            }
            Ok(crate::exit::OK)
        }
        TriggersCmd::List => {
            let path = ["environments", env, "triggers"];
            let Some(body) = read(client, out, Request::get(&path)).await? else {
                return Ok(crate::exit::OK);
            };
            let rows: Vec<Vec<String>> = body["triggers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let fired = t["lastFiredAt"].as_str().unwrap_or("never").to_owned();
                    vec![
                        s(t, "id"),
                        s(t, "name"),
                        s(t, "action"),
                        s(t, "flag"),
                        fired,
                        s(t, "createdBy"),
                    ]
                })
                .collect();
            print(&table(
                &["ID", "NAME", "ACTION", "FLAG", "LAST FIRED", "BY"],
                &rows,
            ))?;
            Ok(crate::exit::OK)
        }
        TriggersCmd::Revoke { id } => {
            client
                .call(Request::new(
                    Method::DELETE,
                    &["environments", env, "triggers", &id],
                ))
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
