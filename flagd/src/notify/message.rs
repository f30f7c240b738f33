//! What a notification says, whatever the vendor: made from versions of the store
//! (who, what, why, before and after, a link to the diff), from the fleet (the
//! follow-up), or given by another part of flagd (a refused automatic action).

use serde::{Deserialize, Serialize};

use crate::store::VersionInfo;

/// Every event a channel can be sent.
pub const EVENTS: [&str; 10] = [
    "kill-switch",
    "revert",
    "undo",
    "automatic",
    "rollout",
    "refused",
    "not-converged",
    "plan",
    "change",
    "approval",
];

/// The events of a channel created without a list: what a responder needs to hear of.
pub const DEFAULT_EVENTS: [&str; 8] = [
    "kill-switch",
    "revert",
    "undo",
    "automatic",
    "refused",
    "not-converged",
    "plan",
    "approval",
];

/// The event a version of this kind is announced as.
pub fn event_of(kind: &str) -> &'static str {
    match kind {
        "toggle" => "kill-switch",
        "revert" => "revert",
        "undo" => "undo",
        "auto-disable" | "auto-revert" => "automatic",
        "rollout" => "rollout",
        _ => "change",
    }
}

/// Flags named in a message at most; the rest are counted.
const NAMED_FLAGS: usize = 10;

/// Versions described one by one in a message that covers several.
const DESCRIBED_VERSIONS: usize = 10;

/// A notification, as every vendor's body is made from it (and as the generic
/// webhook's `data`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The event.
    pub event: String,
    /// The environment.
    pub environment: String,
    /// One line: what happened, where.
    pub title: String,
    /// What changed, one line per version (several for a burst of changes).
    pub lines: Vec<String>,
    /// Who made the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The version before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<u64>,
    /// The version after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<u64>,
    /// The flags changed (at most ten named).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// How many flags changed in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_count: Option<usize>,
    /// The diff (admin UI with `--public-url`, else the API path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl Message {
    /// `v4 → v5`, when both are known.
    pub fn versions(&self) -> Option<String> {
        match (self.from_version, self.to_version) {
            (Some(a), Some(b)) => Some(format!("v{a} → v{b}")),
            (None, Some(b)) => Some(format!("v{b}")),
            _ => None,
        }
    }

    /// The message as lines of plain text: title, what, who, why, versions, link.
    pub fn text_lines(&self) -> Vec<String> {
        let mut out = vec![self.title.clone()];
        out.extend(self.lines.iter().cloned());
        for (label, v) in self.facts() {
            out.push(format!("{label}: {v}"));
        }
        out
    }

    /// Who, why, versions and the diff, as (label, value).
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        if let Some(w) = &self.who {
            f.push(("Who", w.clone()));
        }
        if let Some(w) = &self.why {
            f.push(("Why", w.clone()));
        }
        if let Some(v) = self.versions() {
            f.push(("Version", v));
        }
        if let Some(l) = &self.link {
            f.push(("Diff", l.clone()));
        }
        f
    }
}

/// The link to the diff from `from` to `to`: the admin UI's page under `public_url`,
/// or the API's path when flagd does not know where it is reached.
pub fn diff_link(public_url: Option<&str>, env: &str, from: u64, to: u64) -> String {
    let e = percent_encode(env);
    match public_url {
        Some(base) => format!(
            "{}/#/{e}/history/diff?from={from}&to={to}",
            base.trim_end_matches('/')
        ),
        None => format!("/api/v1/environments/{e}/diff?from={from}&to={to}"),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn named(flags: &[String]) -> String {
    let mut s = flags
        .iter()
        .take(NAMED_FLAGS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if flags.len() > NAMED_FLAGS {
        s.push_str(&format!(" and {} more", flags.len() - NAMED_FLAGS));
    }
    s
}

/// What one version did, in a few words.
fn what(v: &VersionInfo, actions: &[String]) -> String {
    let flags = named(&v.changed_flags);
    let n = v.changed_flags.len();
    let of = |s: &str| {
        if n == 0 {
            s.to_owned()
        } else {
            format!("{s} {flags}")
        }
    };
    match v.kind.as_str() {
        "toggle" => {
            let state = if actions.iter().any(|a| a == "flag.disable") {
                "disabled (kill switch)"
            } else if actions.iter().any(|a| a == "flag.enable") {
                "enabled"
            } else {
                "toggled"
            };
            format!("{flags} {state}")
        }
        "rollout" => of("rollout step of"),
        "revert" => match v.reverted_to {
            Some(to) => format!("reverted to v{to} ({n} flags changed{})", {
                if n > 0 && n <= NAMED_FLAGS {
                    format!(": {flags}")
                } else {
                    String::new()
                }
            }),
            None => of("restored"),
        },
        "undo" => of("undid the change of"),
        "auto-disable" => format!("{flags} disabled automatically"),
        "auto-revert" => match v.reverted_to {
            Some(to) => format!("reverted automatically to v{to} ({n} flags changed)"),
            None => of("reverted automatically"),
        },
        other => of(other),
    }
}

fn title_word(event: &str) -> &'static str {
    match event {
        "kill-switch" => "Kill switch",
        "revert" => "Revert",
        "undo" => "Undo",
        "automatic" => "Automatic action",
        "rollout" => "Rollout",
        "refused" => "Automatic action refused",
        "plan" => "Release plan",
        "not-converged" => "Not converged",
        "applied" => "Applied",
        "test" => "Test",
        _ => "Change",
    }
}

/// The message announcing `versions` (oldest first, at least one) of `env`: one
/// message however many flags or versions (a burst of changes is one message).
pub fn for_versions(
    env: &str,
    versions: &[(VersionInfo, Vec<String>)],
    public_url: Option<&str>,
) -> Option<Message> {
    let (first, _) = versions.first()?;
    let (last, last_actions) = versions.last()?;
    let event = event_of(&first.kind).to_owned();
    let from = first.version.saturating_sub(1);
    let to = last.version;
    let mut flags: Vec<String> = Vec::new();
    for (v, _) in versions {
        for f in &v.changed_flags {
            if !flags.contains(f) {
                flags.push(f.clone());
            }
        }
    }
    let flag_count = flags.len();
    let (title, lines, who, why) = if versions.len() == 1 {
        (
            format!(
                "[{env}] {}: {}",
                title_word(&event),
                what(last, last_actions)
            ),
            Vec::new(),
            Some(last.author.clone()),
            last.reason.clone(),
        )
    } else {
        let mut lines: Vec<String> = versions
            .iter()
            .take(DESCRIBED_VERSIONS)
            .map(|(v, a)| {
                let mut l = format!("v{} {} by {}: {}", v.version, v.kind, v.author, what(v, a));
                if let Some(r) = &v.reason {
                    l.push_str(&format!(" ({r})"));
                }
                l
            })
            .collect();
        if versions.len() > DESCRIBED_VERSIONS {
            lines.push(format!(
                "and {} more versions",
                versions.len() - DESCRIBED_VERSIONS
            ));
        }
        let mut authors: Vec<String> = Vec::new();
        for (v, _) in versions {
            if !authors.contains(&v.author) {
                authors.push(v.author.clone());
            }
        }
        (
            format!("[{env}] {} changes (v{from} → v{to})", versions.len()),
            lines,
            Some(authors.join(", ")),
            None,
        )
    };
    flags.truncate(NAMED_FLAGS);
    Some(Message {
        event,
        environment: env.to_owned(),
        title,
        lines,
        who,
        why,
        from_version: Some(from),
        to_version: Some(to),
        flags,
        flag_count: Some(flag_count),
        link: Some(diff_link(public_url, env, from, to)),
    })
}

/// What a follow-up watches for, kept in its outbox row until the fleet answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Watch {
    /// The environment.
    pub environment: String,
    /// The version the fleet should apply.
    pub version: u64,
    /// When it was committed (ms).
    pub committed_at: i64,
    /// When the watch began (ms).
    pub since: i64,
    /// The diff of the message it follows.
    #[serde(default)]
    pub link: Option<String>,
}

/// "applied by N/N instances in X s".
pub fn applied(w: &Watch, n: usize, seconds: f64) -> Message {
    Message {
        event: "applied".into(),
        environment: w.environment.clone(),
        title: format!(
            "[{}] v{} applied by {n}/{n} SDK instances in {seconds:.1} s",
            w.environment, w.version
        ),
        to_version: Some(w.version),
        link: w.link.clone(),
        ..Message::default()
    }
}

/// "after T, K of N have not applied vX: ids…".
pub fn not_converged(
    w: &Watch,
    after: std::time::Duration,
    lagging: &[String],
    n: usize,
) -> Message {
    let after = humantime::format_duration(std::time::Duration::from_secs(after.as_secs()));
    Message {
        event: "not-converged".into(),
        environment: w.environment.clone(),
        title: format!(
            "[{}] after {after}, {} of {n} SDK instances have not applied v{}",
            w.environment,
            lagging.len(),
            w.version
        ),
        lines: vec![named(lagging)],
        to_version: Some(w.version),
        link: w.link.clone(),
        ..Message::default()
    }
}

/// A message that is not about a version (a refused automatic action, a test).
pub fn plain(event: &str, env: &str, title: &str, text: &str, link: Option<&str>) -> Message {
    Message {
        event: event.to_owned(),
        environment: env.to_owned(),
        title: format!("[{env}] {}: {title}", title_word(event)),
        lines: if text.is_empty() {
            Vec::new()
        } else {
            vec![text.to_owned()]
        },
        link: link.map(str::to_owned),
        ..Message::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(n: u64, kind: &str, flags: &[&str]) -> VersionInfo {
        VersionInfo {
            version: n,
            kind: kind.into(),
            author: "alice".into(),
            reason: Some("5xx spike".into()),
            created_at: String::new(),
            changed_flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            reverted_to: None,
        }
    }

    #[test]
    fn a_kill_switch_says_who_what_why_and_links_the_diff() {
        let m = for_versions(
            "production",
            &[(
                version(2, "toggle", &["checkout"]),
                vec!["flag.disable".into()],
            )],
            Some("https://flags.example.com/"),
        )
        .expect("a message");
        assert_eq!(m.event, "kill-switch");
        assert_eq!(
            m.title,
            "[production] Kill switch: checkout disabled (kill switch)"
        );
        assert_eq!(m.versions().as_deref(), Some("v1 → v2"));
        assert_eq!(
            m.link.as_deref(),
            Some("https://flags.example.com/#/production/history/diff?from=1&to=2")
        );
    }

    #[test]
    fn a_burst_is_one_message_and_many_flags_are_counted() {
        let many: Vec<String> = (0..10_000).map(|i| format!("f{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let m = for_versions(
            "staging",
            &[
                (version(3, "import", &refs), vec![]),
                (version(4, "toggle", &["f1"]), vec!["flag.enable".into()]),
            ],
            None,
        )
        .expect("a message");
        assert_eq!(m.flag_count, Some(10_000));
        assert_eq!(m.flags.len(), 10);
        assert_eq!(m.lines.len(), 2);
        assert_eq!(
            m.link.as_deref(),
            Some("/api/v1/environments/staging/diff?from=2&to=4")
        );
    }
}
