//! Each vendor's request (body, signature) and how it says a message was taken.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::message::Message;

/// The kinds of channel.
pub const KINDS: [&str; 6] = ["slack", "teams", "feishu", "dingtalk", "wecom", "webhook"];

/// Whether a kind signs its messages, and so needs a secret.
pub fn needs_secret(kind: &str) -> bool {
    matches!(kind, "feishu" | "dingtalk" | "webhook")
}

/// The least time between two messages to one channel: each vendor's documented rate
/// limit for one webhook (Slack about one a second, Feishu 5 a second and 100 a minute,
/// DingTalk and WeCom 20 a minute), so that a burst is paced rather than refused.
pub fn min_interval(kind: &str) -> std::time::Duration {
    std::time::Duration::from_millis(match kind {
        "slack" | "teams" => 1_000,
        "feishu" => 600,
        "dingtalk" | "wecom" => 3_000,
        _ => 0,
    })
}

/// Checks a secret's form where the vendor fixes one; the message says what is wrong.
pub fn check_secret(kind: &str, secret: &str) -> Result<(), String> {
    if kind == "webhook" {
        let Some(key) = secret.strip_prefix("whsec_") else {
            return Err("a Standard Webhooks secret starts with whsec_ (whsec_ and base64)".into());
        };
        let key = BASE64
            .decode(key)
            .map_err(|_| "after whsec_, a Standard Webhooks secret is base64".to_owned())?;
        if key.len() < 16 {
            return Err("the key is shorter than 16 bytes".into());
        }
    }
    if secret.trim().is_empty() {
        return Err("must be a non-empty string".into());
    }
    Ok(())
}

/// One HTTP request to a vendor.
#[derive(Debug)]
pub struct Outgoing {
    /// Where (DingTalk's carries its signature).
    pub url: String,
    /// Headers beside `Content-Type: application/json`.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: String,
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Result<Vec<u8>, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    mac.update(message);
    Ok(mac.finalize().into_bytes().to_vec())
}

fn markdown(m: &Message) -> String {
    let mut out = format!("**{}**", m.title);
    for l in &m.lines {
        out.push_str(&format!("\n\n{l}"));
    }
    for (label, v) in m.facts() {
        if label == "Diff" && v.starts_with("http") {
            out.push_str(&format!("\n\n{label}: [{v}]({v})"));
        } else {
            out.push_str(&format!("\n\n{label}: {v}"));
        }
    }
    out
}

fn slack(m: &Message) -> Value {
    let text = m.text_lines().join("\n");
    let mut body = m.lines.join("\n");
    for (label, v) in m.facts() {
        if !body.is_empty() {
            body.push('\n');
        }
        if label == "Diff" && v.starts_with("http") {
            body.push_str(&format!("*{label}:* <{v}|diff>"));
        } else {
            body.push_str(&format!("*{label}:* {v}"));
        }
    }
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": format!("*{}*", m.title)}
    })];
    if !body.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": body}}));
    }
    json!({"text": text, "blocks": blocks})
}

fn teams(m: &Message) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock", "text": m.title, "weight": "Bolder", "size": "Medium", "wrap": true
    })];
    for l in &m.lines {
        body.push(json!({"type": "TextBlock", "text": l, "wrap": true}));
    }
    let facts: Vec<Value> = m
        .facts()
        .into_iter()
        .map(|(t, v)| json!({"title": t, "value": v}))
        .collect();
    if !facts.is_empty() {
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    // An OpenUrl action takes an absolute URL only.
    if let Some(link) = m.link.as_deref().filter(|l| l.starts_with("http")) {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "View diff", "url": link}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }]
    })
}

/// The request for message `m` (id `id`, the same on every attempt) to a channel of
/// `kind` at `url`, signed with `secret` at `now` (seconds since the epoch).
pub fn render(
    kind: &str,
    url: &str,
    secret: Option<&str>,
    id: &str,
    m: &Message,
    now_ms: i64,
) -> Result<Outgoing, String> {
    let seconds = now_ms / 1000;
    let need = || secret.ok_or_else(|| format!("a {kind} channel needs its secret"));
    let plain = |body: Value| Outgoing {
        url: url.to_owned(),
        headers: Vec::new(),
        body: body.to_string(),
    };
    Ok(match kind {
        "slack" => plain(slack(m)),
        "teams" => plain(teams(m)),
        "feishu" => {
            // Feishu: the key is "timestamp\nsecret", the message empty.
            let key = format!("{seconds}\n{}", need()?);
            let sign = BASE64.encode(hmac_sha256(key.as_bytes(), b"")?);
            plain(json!({
                "timestamp": seconds.to_string(),
                "sign": sign,
                "msg_type": "text",
                "content": {"text": m.text_lines().join("\n")},
            }))
        }
        "dingtalk" => {
            let secret = need()?;
            let sign = BASE64.encode(hmac_sha256(
                secret.as_bytes(),
                format!("{now_ms}\n{secret}").as_bytes(),
            )?);
            let mut u = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
            u.query_pairs_mut()
                .append_pair("timestamp", &now_ms.to_string())
                .append_pair("sign", &sign);
            Outgoing {
                url: u.into(),
                headers: Vec::new(),
                body: json!({
                    "msgtype": "markdown",
                    "markdown": {"title": m.title, "text": markdown(m)},
                })
                .to_string(),
            }
        }
        "wecom" => plain(json!({
            "msgtype": "markdown",
            "markdown": {"content": markdown(m)},
        })),
        "webhook" => {
            let secret = need()?;
            let key = BASE64
                .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
                .map_err(|_| "the secret is not whsec_ and base64".to_owned())?;
            let body = json!({
                "type": format!("flagd.{}", m.event),
                "timestamp": crate::store::rfc3339(now_ms),
                "data": m,
            })
            .to_string();
            let signature = BASE64.encode(hmac_sha256(
                &key,
                format!("{id}.{seconds}.{body}").as_bytes(),
            )?);
            Outgoing {
                url: url.to_owned(),
                headers: vec![
                    ("webhook-id", id.to_owned()),
                    ("webhook-timestamp", seconds.to_string()),
                    ("webhook-signature", format!("v1,{signature}")),
                ],
                body,
            }
        }
        other => return Err(format!("unknown channel kind {other:?}")),
    })
}

/// Whether a 2xx answer is a delivery: Feishu, DingTalk and WeCom answer 200 with an
/// error code in the body when they refuse a message (a bad signature, a rate limit).
pub fn judge(kind: &str, body: &str) -> Result<(), String> {
    let field = match kind {
        "feishu" => "code",
        "dingtalk" | "wecom" => "errcode",
        _ => return Ok(()),
    };
    let v: Value = serde_json::from_str(body)
        .map_err(|_| format!("{kind} answered something that is not JSON"))?;
    // Feishu's older answers say StatusCode instead of code.
    let code = v
        .get(field)
        .or_else(|| v.get("StatusCode"))
        .and_then(Value::as_i64);
    match code {
        Some(0) => Ok(()),
        Some(c) => {
            let msg = v
                .get("msg")
                .or_else(|| v.get("errmsg"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            Err(format!("{kind} refused the message: {field} {c} {msg}")
                .trim_end()
                .to_owned())
        }
        None => Err(format!("{kind} answered without a {field}")),
    }
}
