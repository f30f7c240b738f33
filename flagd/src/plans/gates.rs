//! Health gates: PromQL queries against the configured Prometheus, each with a
//! threshold. A gate passes, fails, or has no answer (no data, NaN, Prometheus down or
//! erring): the last never passes, it holds the plan (the most common complaint about
//! canary tools is that no traffic, or NaN, passed a check).

use std::time::Duration;

use serde_json::{Value, json};

use crate::store::Gate;

/// How long one query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What one gate said.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    /// The value, and whether it is within the threshold.
    Value(f64, bool),
    /// No value to decide on, and why.
    NoData(String),
}

/// What the gates of a plan said, together.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every gate passed.
    Pass,
    /// A gate failed: roll back.
    Fail(String),
    /// No gate failed, but one had no answer: hold.
    NoData(String),
}

/// A Prometheus server's HTTP API.
#[derive(Clone, Debug)]
pub struct Prometheus {
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// The server at `url` (`http://prometheus:9090`).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// Evaluates one instant query: its single value, or why there is none.
    pub async fn value(&self, query: &str) -> Result<f64, String> {
        let r = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|e| format!("Prometheus did not answer: {e}"))?;
        let status = r.status();
        let body: Value = r
            .json()
            .await
            .map_err(|e| format!("Prometheus answered {status} without JSON: {e}"))?;
        if body["status"] != "success" {
            return Err(format!(
                "Prometheus refused the query ({status}): {}",
                body["error"].as_str().unwrap_or("no reason given")
            ));
        }
        let data = &body["data"];
        let sample = match data["resultType"].as_str() {
            Some("scalar") => &data["result"][1],
            Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
                Some([one]) => &one["value"][1],
                Some([]) | None => return Err("the query returned no data".into()),
                Some(many) => {
                    return Err(format!(
                        "the query returned {} series; a gate needs one (sum or max them)",
                        many.len()
                    ));
                }
            },
            other => {
                return Err(format!(
                    "the query returned a {}; a gate needs a scalar or one series",
                    other.unwrap_or("nothing")
                ));
            }
        };
        let v: f64 = sample
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("the query returned {sample}, not a number"))?;
        if v.is_nan() {
            return Err("the query returned NaN (no traffic to compute it from?)".into());
        }
        Ok(v)
    }

    /// Evaluates every gate: what each said, and the verdict.
    pub async fn check(&self, gates: &[Gate]) -> (Verdict, Value) {
        let mut seen = Vec::with_capacity(gates.len());
        for g in gates {
            let s = match self.value(&g.query).await {
                Ok(v) => Seen::Value(v, within(g, v)),
                Err(why) => Seen::NoData(why),
            };
            seen.push((g, s));
        }
        verdict(&seen)
    }
}

/// Whether `v` passes the gate.
pub fn within(g: &Gate, v: f64) -> bool {
    match g.comparison.as_str() {
        "<" => v < g.threshold,
        "<=" => v <= g.threshold,
        ">" => v > g.threshold,
        ">=" => v >= g.threshold,
        _ => false,
    }
}

/// The verdict of what the gates said, and the record of it (per gate: its value or
/// why it had none).
pub fn verdict(seen: &[(&Gate, Seen)]) -> (Verdict, Value) {
    let record: Vec<Value> = seen
        .iter()
        .map(|(g, s)| match s {
            Seen::Value(v, ok) => json!({"gate": g.name, "value": v, "passed": ok}),
            Seen::NoData(why) => json!({"gate": g.name, "value": null, "noData": why}),
        })
        .collect();
    let failed: Vec<String> = seen
        .iter()
        .filter_map(|(g, s)| match s {
            Seen::Value(v, false) => Some(format!(
                "gate \"{}\" failed: {v} is not {} {}",
                g.name, g.comparison, g.threshold
            )),
            _ => None,
        })
        .collect();
    let missing: Vec<String> = seen
        .iter()
        .filter_map(|(g, s)| match s {
            Seen::NoData(why) => Some(format!("gate \"{}\" has no value: {why}", g.name)),
            _ => None,
        })
        .collect();
    let v = if !failed.is_empty() {
        Verdict::Fail(failed.join("; "))
    } else if !missing.is_empty() {
        Verdict::NoData(missing.join("; "))
    } else {
        Verdict::Pass
    };
    (v, Value::Array(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(c: &str, t: f64) -> Gate {
        Gate {
            name: "errors".into(),
            query: "q".into(),
            comparison: c.into(),
            threshold: t,
        }
    }

    #[test]
    fn a_failure_wins_over_no_data_and_no_data_never_passes() {
        let (a, b) = (gate("<", 1.0), gate("<=", 0.0));
        assert_eq!(verdict(&[(&a, Seen::Value(0.5, true))]).0, Verdict::Pass);
        let (v, record) = verdict(&[
            (&a, Seen::NoData("down".into())),
            (&b, Seen::Value(2.0, false)),
        ]);
        assert!(matches!(v, Verdict::Fail(m) if m.contains("2 is not <= 0")));
        assert_eq!(record[1]["value"], 2.0);
        assert!(matches!(
            verdict(&[(&a, Seen::NoData("the query returned no data".into()))]).0,
            Verdict::NoData(_)
        ));
        assert!(within(&gate(">=", 1.0), 1.0) && !within(&gate(">", 1.0), 1.0));
    }
}
