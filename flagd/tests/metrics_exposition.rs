//! `/metrics` against the real `flagd` binary: flag keys and variants that hold `"`,
//! `\` and newlines come out escaped (the exposition parses, no series is forged, the
//! values round-trip), and what callers choose cannot grow the series without bound.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use flagd_harness::{ADMIN_TOKEN as ADMIN, Binary, FlagdProcess as Flagd};

/// One sample: metric name, labels (unescaped), value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses an OpenMetrics text strictly: every line is a `# HELP`, `# TYPE`, `# UNIT`
/// or a sample of a declared family, label values use only the three escapes, and the
/// text ends with `# EOF`. Panics, naming the line, on anything else.
fn parse(text: &str) -> Vec<Sample> {
    let mut families: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.last(), Some(&""), "ends with a newline");
    assert_eq!(
        lines.get(lines.len().wrapping_sub(2)),
        Some(&"# EOF"),
        "ends with # EOF"
    );
    for (n, line) in lines[..lines.len() - 2].iter().enumerate() {
        let at = || format!("line {}: {line:?}", n + 1);
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name) = (parts.next(), parts.next().unwrap_or_default());
            assert!(matches!(kind, Some("HELP" | "TYPE" | "UNIT")), "{}", at());
            assert!(metric_name(name), "{}", at());
            if kind == Some("TYPE") {
                families.push(name.to_owned());
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{}", at()));
        let name = &line[..name_end];
        assert!(metric_name(name), "{}", at());
        assert!(
            families.iter().any(|f| name == f
                || ["_total", "_bucket", "_count", "_sum", "_created"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f))),
            "a sample of no declared family: {}",
            at()
        );
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find("=\"").unwrap_or_else(|| panic!("{}", at()));
                let key = &rest[..eq];
                assert!(metric_name(key), "label name {key:?}: {}", at());
                let mut value = String::new();
                let mut chars = rest[eq + 2..].char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break eq + 2 + i + 1,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => panic!("bad escape {other:?}: {}", at()),
                        },
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value: {}", at()),
                    }
                };
                assert!(labels.insert(key.to_owned(), value).is_none(), "{}", at());
                rest = &rest[end..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let value = rest
            .strip_prefix(' ')
            .and_then(|v| v.split(' ').next())
            .unwrap_or_else(|| panic!("no value: {}", at()));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value {v:?}: {}", at())),
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

async fn scrape(f: &Flagd) -> Vec<Sample> {
    let r = reqwest::get(f.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    parse(&r.text().await.unwrap())
}

/// Every byte but letters and digits percent-encoded: any key fits in a path segment.
fn encode(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Api {
    f: Flagd,
    http: reqwest::Client,
    sdk_key: String,
}

impl Api {
    async fn new(args: &[&str]) -> Self {
        let f = Binary::at(env!("CARGO_BIN_EXE_flagd")).args(args).start();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let r: Value = http
            .post(f.url("/api/v1/environments/production/sdk-keys"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sdk_key = r["secret"].as_str().unwrap().to_owned();
        Self { f, http, sdk_key }
    }

    async fn put_flag(&self, key: &str, flag: &Value) {
        let r = self
            .http
            .put(self.f.url(&format!(
                "/api/v1/environments/production/flags/{}",
                encode(key)
            )))
            .bearer_auth(ADMIN)
            .body(flag.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{key:?}: {}", r.text().await.unwrap());
    }

    /// One OFREP evaluation; returns the status and the body.
    async fn evaluate(&self, key: &str) -> (u16, Value) {
        let r = self
            .http
            .post(
                self.f
                    .url(&format!("/ofrep/v1/evaluate/flags/{}", encode(key))),
            )
            .bearer_auth(&self.sdk_key)
            .body(r#"{"context": {"targetingKey": "user-1"}}"#)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

fn evaluations(samples: &[Sample]) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.name == "flagd_ofrep_evaluations_total")
        .collect()
}

#[tokio::test]
async fn label_values_are_escaped_and_cannot_forge_series() {
    let api = Api::new(&[]).await;
    // What the issue showed: a key that closes the label set, ends the line and starts a
    // forged series; and keys and variants with `"` and `\` (one ending in a backslash,
    // which would escape the closing quote).
    // The key syntax refuses the newline itself (control characters cannot be keys):
    let r = api
        .http
        .put(api.f.url(&format!(
            "/api/v1/environments/production/flags/{}",
            encode("x\"} 1\nflagd_forged_total{a=\"b")
        )))
        .bearer_auth(ADMIN)
        .body(
            json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // and without it a key still closes the label set and writes a sample after it.
    let forging = "x\"} 1 flagd_forged_total{a=\"b";
    let quoting = r#"say "hi" \ to C:\"#;
    let variant = r#"o"n\"#;
    let flag = json!({"state": "ENABLED", "variants": {variant: true, "off": false}, "defaultVariant": variant});
    for key in [forging, quoting] {
        api.put_flag(key, &flag).await;
        let (status, body) = api.evaluate(key).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (&body["key"], &body["variant"]),
            (&json!(key), &json!(variant))
        );
    }

    let samples = scrape(&api.f).await;
    assert!(
        !samples.iter().any(|s| s.name.contains("forged")),
        "a forged series: {samples:#?}"
    );
    for key in [forging, quoting] {
        let got: Vec<_> = evaluations(&samples)
            .into_iter()
            .filter(|s| s.labels.get("flag").map(String::as_str) == Some(key))
            .collect();
        assert_eq!(got.len(), 1, "{key:?} round-trips: {samples:#?}");
        assert_eq!(got[0].value, 1.0);
        assert_eq!(got[0].labels["variant"], variant);
        assert_eq!(got[0].labels["reason"], "STATIC");
        assert_eq!(got[0].labels["environment"], "production");
    }
}

#[tokio::test]
async fn callers_cannot_grow_the_series() {
    let api = Api::new(&["--metrics-max-series", "20"]).await;
    // 1,000 evaluations of keys that are no flag: one series.
    for i in 0..1_000 {
        let (status, _) = api.evaluate(&format!("no-such-flag-{i}")).await;
        assert_eq!(status, 404);
    }
    let samples = scrape(&api.f).await;
    let evals = evaluations(&samples);
    assert_eq!(evals.len(), 1, "{evals:#?}");
    assert_eq!(evals[0].labels["flag"], "(not found)");
    assert_eq!(evals[0].labels["reason"], "FLAG_NOT_FOUND");
    assert_eq!(evals[0].value, 1_000.0);

    // 30 real flags, each evaluated: 20 label sets are the cap (the unknown key holds
    // one), the other 11 flags are counted as one overflow series.
    let flag =
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"});
    for i in 0..30 {
        api.put_flag(&format!("flag-{i:02}"), &flag).await;
        assert_eq!(api.evaluate(&format!("flag-{i:02}")).await.0, 200);
    }
    // Methods are a token a client may make up: one value for the non-standard ones.
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("PROBE{i}").as_bytes()).unwrap();
        let r = api
            .http
            .request(method, api.f.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let samples = scrape(&api.f).await;
    let evals = evaluations(&samples);
    let overflow: Vec<_> = evals
        .iter()
        .filter(|s| s.labels["flag"] == "(other)")
        .collect();
    assert_eq!(evals.len(), 21, "{evals:#?}");
    assert_eq!(overflow.len(), 1, "{overflow:#?}");
    assert_eq!(overflow[0].labels["variant"], "(other)");
    assert_eq!(overflow[0].value, 11.0);
    let total: f64 = evals.iter().map(|s| s.value).sum();
    assert_eq!(total, 1_030.0, "every evaluation is counted once");

    let requests: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "flagd_http_requests_total")
        .collect();
    assert!(
        requests
            .iter()
            .all(|s| !s.labels["method"].starts_with("PROBE")),
        "{requests:#?}"
    );
    let probes: f64 = requests
        .iter()
        .filter(|s| s.labels["method"] == "other")
        .map(|s| s.value)
        .sum();
    assert_eq!(probes, 50.0, "{requests:#?}");
    // The cap holds for HTTP requests too: beyond 20 label sets, routes overflow.
    let own = requests
        .iter()
        .filter(|s| s.labels["route"] != "(other)")
        .count();
    assert!(own <= 20, "{requests:#?}");
}
