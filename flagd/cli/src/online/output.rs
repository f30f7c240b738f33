//! What flagctl prints: text for people, JSON for scripts, and the helpers both use.

use super::*;

/// Output settings and the streams.
#[derive(Debug)]
pub struct Out {
    /// Print JSON.
    pub json: bool,
    /// Print only what a script needs.
    pub quiet: bool,
}

pub(crate) type Done = Result<u8, Failure>;

pub(crate) fn io(e: &std::io::Error) -> Failure {
    Failure::Failed(format!("cannot write the output: {e}"))
}

pub(crate) fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| io(&e))
}

pub(crate) fn print_json(v: &Value) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(v).map_err(|e| Failure::Failed(e.to_string()))?;
    text.push('\n');
    print(&text)
}

pub(crate) fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Columns padded to their widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            s.push_str(c);
            if i + 1 < widths.len() {
                // Padded by hand: `format!`'s width is a u16 and panics past it (a
                // 64 KiB cell).
                let pad = w.saturating_sub(c.chars().count()) + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

pub(crate) fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(t)) if t.is_empty() => "-".into(),
        Some(Value::String(t)) => t.clone(),
        Some(other) => other.to_string(),
    }
}

pub(crate) fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

pub(crate) fn list_of(v: &Value, max: usize) -> String {
    let items: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut text = items
        .iter()
        .take(max)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > max {
        text.push_str(&format!(" and {} more", items.len() - max));
    }
    text
}

/// What a flag's targeting does, in a few words.
pub(crate) fn targeting_summary(def: &Value) -> String {
    match def.get("targeting") {
        None | Some(Value::Null) => "-".into(),
        Some(Value::Object(o)) if o.is_empty() => "-".into(),
        Some(_) => match flagd_core::document::rollout::split(def) {
            Some(buckets) => {
                let split = buckets
                    .iter()
                    .map(|(v, p)| format!("{v} {}%", (p * 100.0).round() / 100.0))
                    .collect::<Vec<_>>()
                    .join(" / ");
                if def.pointer("/targeting/if").is_some() {
                    format!("rules, then {split}")
                } else {
                    split
                }
            }
            None => "rules".into(),
        },
    }
}

impl Out {
    /// Makes a change (with `--if-version`), prints its answer, then `--wait`s.
    pub(crate) async fn change(
        &self,
        client: &Client,
        env: &str,
        req: Request<'_>,
        opts: &WriteOpts,
    ) -> Done {
        let body = client
            .call(
                req.if_version(opts.if_version)
                    .if_flag_version(opts.if_flag_version),
            )
            .await?
            .body;
        let version = body.get("version").and_then(Value::as_u64).unwrap_or(0);
        let waited = if opts.wait {
            let w = client
                .wait_for_fleet(
                    env,
                    Some(version),
                    opts.timeout,
                    opts.allow_unreachable,
                    opts.allow_unacknowledged,
                )
                .await;
            // The change is made whatever the wait meets: a pipeline must not take a
            // failed wait for a failed change and make it again (exit 6, not 5 or 7).
            Some(w.map_err(|e| {
                Failure::NotApplied(format!(
                    "{env}: version {version} is committed, but whether the fleet applied it \
                     is unknown: {}",
                    e.describe()
                ))
            }))
        } else {
            None
        };
        if self.json {
            let mut v = body.clone();
            if let (Value::Object(o), Some(w)) = (&mut v, &waited) {
                let fleet = match w {
                    Ok(c) => c.to_json(),
                    Err(e) => json!({"converged": false, "error": e.describe()}),
                };
                o.insert("fleet".into(), fleet);
            }
            print_json(&v)?;
        } else if self.quiet {
            print(&format!("{version}\n"))?;
        } else if body.get("changed").and_then(Value::as_bool) == Some(false) {
            print(&format!(
                "{env}: nothing to change; still version {version}\n"
            ))?;
        } else {
            let flags = list_of(&body["changedFlags"], 5);
            print(&format!(
                "{env}: version {version}{}\n",
                if flags.is_empty() {
                    String::new()
                } else {
                    format!(" ({flags})")
                }
            ))?;
        }
        match waited {
            Some(w) => self.converged(env, &w?),
            None => Ok(crate::exit::OK),
        }
    }

    /// Reports where the fleet stands; exit 6 if it has not converged.
    pub(crate) fn converged(&self, env: &str, c: &Convergence) -> Done {
        let ms = format!("{:.1}", c.waited.as_secs_f64() * 1000.0);
        let excused: Vec<&Value> = c.excused().collect();
        if !excused.is_empty() {
            note(&named(
                &format!(
                    "flagctl: not counted (--allow-unreachable): {} that did not apply version {}:",
                    plural(excused.len(), "unreachable SDK instance"),
                    c.version
                ),
                excused.iter().copied(),
            ));
        }
        warn_problems(c);
        let providers = c.unacknowledged.len();
        let sent_to = |n: usize| {
            format!(
                "sent to {} (OpenFeature flagd providers over gRPC, which cannot acknowledge it)",
                plural(n, "provider")
            )
        };
        if c.converged() {
            if !self.json && !self.quiet {
                // Only instances that acknowledge can be said to have applied it.
                let total = c.total - providers;
                let applied = total - c.lagging.len();
                let text = if total == 0 && providers > 0 {
                    format!(
                        "{env}: version {} {} ({ms} ms, --allow-unacknowledged)\n",
                        c.version,
                        sent_to(providers)
                    )
                } else if total == 0 {
                    format!(
                        "{env}: no SDK instance is connected (to any replica); nothing to wait for\n"
                    )
                } else {
                    let who = if !excused.is_empty() {
                        format!("{applied} of {}", plural(total, "SDK instance"))
                    } else if total == 1 {
                        "the one SDK instance".to_owned()
                    } else {
                        format!("all {total} SDK instances")
                    };
                    // Lost after applying it: it did apply it, but nobody hears it now.
                    let lost = c.unreachable.saturating_sub(excused.len());
                    let lost = if lost == 0 {
                        String::new()
                    } else {
                        format!("; {lost} of them unreachable now")
                    };
                    let sent = if providers == 0 {
                        String::new()
                    } else {
                        format!("; {}", sent_to(providers))
                    };
                    format!(
                        "{env}: {who} applied version {} ({ms} ms{lost}){sent}\n",
                        c.version
                    )
                };
                print(&text)?;
            }
            return Ok(crate::exit::OK);
        }
        let blocking: Vec<&Value> = c.blocking().collect();
        let unsent: Vec<&Value> = c.unsent().collect();
        if blocking.is_empty() && unsent.is_empty() {
            // All that acknowledge applied it; the rest were sent it and cannot say.
            note(&named(
                &format!(
                    "flagctl: {env}: version {} was {}; they are not known to have applied it \
                     (--allow-unacknowledged to count a provider sent the version as done):",
                    c.version,
                    sent_to(providers)
                ),
                c.unacknowledged.iter(),
            ));
            return Ok(crate::exit::NOT_APPLIED);
        }
        if !unsent.is_empty() {
            note(&named(
                &format!(
                    "flagctl: {env}: {} not sent version {} within {ms} ms:",
                    plural(unsent.len(), "provider"),
                    c.version
                ),
                unsent.iter().copied(),
            ));
        }
        if blocking.is_empty() {
            return Ok(crate::exit::NOT_APPLIED);
        }
        let mut text = named(
            &format!(
                "flagctl: {env}: {} of {} did not apply version {} within {ms} ms:",
                blocking.len(),
                plural(c.total - providers, "SDK instance"),
                c.version
            ),
            blocking.iter().copied(),
        );
        if blocking.iter().any(|i| is_unreachable(i)) {
            text.push_str(
                "\n  An unreachable instance may still serve what it last applied. It counts \
                 until it reconnects or\n  flagd's --fleet-ttl passes: `flagctl fleet forget \
                 ID` once it is known to be gone, or\n  --allow-unreachable not to wait for it.",
            );
        }
        note(&text);
        Ok(crate::exit::NOT_APPLIED)
    }
}

/// A title, then one line per instance.
pub(crate) fn named<'a>(title: &str, instances: impl Iterator<Item = &'a Value>) -> String {
    let mut text = title.to_owned();
    for i in instances {
        text.push_str("\n  ");
        text.push_str(&instance_line(i));
    }
    text
}

/// `i-2 (host h, sdk/1): on version 6, last ack T`, or for an instance flagd lost,
/// `… unreachable since T, last applied v6`.
pub(crate) fn instance_line(i: &Value) -> String {
    let who = format!(
        "{} (host {}, {})",
        s(i, "instance"),
        s(i, "host"),
        s(i, "sdk")
    );
    if crate::client::is_unacknowledging(i) {
        let sent = match i.get("sentVersion").and_then(Value::as_u64) {
            Some(v) => format!("sent version {v}, not acknowledged"),
            None => "sent no version yet".to_owned(),
        };
        return if is_unreachable(i) {
            format!(
                "{who}: unreachable since {}, {sent}",
                s(i, "unreachableSince")
            )
        } else {
            format!("{who}: {sent}")
        };
    }
    if is_unreachable(i) {
        let applied = match i.get("appliedVersion").and_then(Value::as_u64) {
            Some(v) => format!("last applied v{v}"),
            None => "never applied a version".to_owned(),
        };
        format!(
            "{who}: unreachable since {}, {applied}",
            s(i, "unreachableSince")
        )
    } else {
        format!(
            "{who}: on version {}, last ack {}",
            s(i, "appliedVersion"),
            s(i, "lastAck")
        )
    }
}

/// Instances that applied the version but could not load some of its flags: those
/// flags evaluate to the code default there (reason `ERROR`). Not a failure of the
/// wait, but worth knowing during a rollback.
pub(crate) fn warn_problems(c: &Convergence) {
    for i in &c.troubled {
        note(&format!(
            "flagctl: warning: {} applied version {}, but could not load {}; \
             they evaluate to the code default there:{}",
            s(i, "instance"),
            c.version,
            plural(problems_of(i).len(), "flag"),
            problem_lines(i, 5)
        ));
    }
}

/// `problems` of a fleet entry.
pub(crate) fn problems_of(i: &Value) -> &[Value] {
    i.get("problems")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

/// An instance's problems, one `\n  path: message` line each (at most `max`), then its
/// last error.
pub(crate) fn problem_lines(i: &Value, max: usize) -> String {
    let problems = problems_of(i);
    let mut text = String::new();
    for p in problems.iter().take(max) {
        text.push_str(&format!("\n  {}: {}", s(p, "path"), s(p, "message")));
    }
    if problems.len() > max {
        text.push_str(&format!("\n  and {} more", problems.len() - max));
    }
    if let Some(e) = i.get("lastError").and_then(Value::as_str) {
        text.push_str(&format!("\n  last error: {e}"));
    }
    text
}

/// A read: with `--json` its answer is printed as it is and `None` returned; otherwise
/// the answer, for the text view.
pub(crate) async fn read(
    client: &Client,
    out: &Out,
    req: Request<'_>,
) -> Result<Option<Value>, Failure> {
    let body = client.call(req).await?.body;
    if out.json {
        print_json(&body)?;
        return Ok(None);
    }
    Ok(Some(body))
}
