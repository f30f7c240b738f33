//! Runs every evaluation scenario of the flagd testbed (gherkin features + flag JSON,
//! in `../shared/conformance/flagd-testbed/`) against the evaluator.
//!
//! Both suites run: `evaluator/` (pure evaluation of `testkit-flags.json`) and the
//! provider suites in `gherkin/` against the merged `flags/*.json`, exactly as the
//! testbed's flagd image serves them. What tests provider plumbing rather than
//! evaluation is listed in [`OUT_OF_SCOPE_FEATURES`] and [`OUT_OF_SCOPE_TAGS`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flagd_core::{EvaluationContext, FlagSet, Snapshot, Strictness, ValueType};
use gherkin::{Feature, GherkinEnv, Scenario, Step};
use serde_json::{Map, Value, json};

/// Whole features that test an SDK provider, not evaluation.
const OUT_OF_SCOPE_FEATURES: &[(&str, &str)] = &[
    (
        "gherkin/config.feature",
        "provider configuration options (host, port, TLS, resolver type)",
    ),
    (
        "gherkin/connection.feature",
        "provider connection, reconnection and stream handling",
    ),
    (
        "gherkin/events.feature",
        "provider event handlers (ready, change, stale, error)",
    ),
    (
        "gherkin/rpc-caching.feature",
        "the RPC provider's client-side result cache",
    ),
    (
        "gherkin/sync-payload.feature",
        "the flagd gRPC sync payload format",
    ),
];

/// Tags whose scenarios are out of scope wherever they appear.
const OUT_OF_SCOPE_TAGS: &[(&str, &str)] = &[
    (
        "fractional-v1",
        "legacy float bucketing of flagd < v0.15.0, replaced by the v2 integer algorithm we implement",
    ),
    (
        "fractional-v3",
        "unreleased CBOR hashing (flagd PR #2011, not merged); mutually exclusive with v2",
    ),
    (
        "deprecated",
        "pre-2025 no-default-variant behaviour, superseded by @no-default-variant",
    ),
    ("caching", "provider-side result caching"),
    ("events", "provider event handlers"),
    ("grace", "provider behaviour while the connection is lost"),
];

fn testbed_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("FLAGD_TESTBED_DIR") {
        return Some(PathBuf::from(d));
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/flagd-testbed");
    d.is_dir().then_some(d)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn deep_merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn compile(doc: &Value) -> Snapshot {
    let set = FlagSet::parse(doc, Strictness::Lenient)
        .unwrap_or_else(|e| panic!("testbed flags do not load: {e}"));
    // Flags whose targeting cannot run (a $ref to a missing evaluator) are part of the
    // testbed: they evaluate with reason ERROR, as the scenarios expect.
    Snapshot::compile(&set, 1)
}

/// The flag sets a scenario can select, by the names the testbed uses.
struct Sources {
    evaluator: Snapshot,
    /// `flags/allFlags.json` and `rawflags/<file>.json`.
    provider: BTreeMap<String, Snapshot>,
    /// The static context the testbed's flagd adds to every request.
    static_context: Map<String, Value>,
}

impl Sources {
    fn load(dir: &Path) -> Self {
        let evaluator = compile(&read_json(&dir.join("evaluator/flags/testkit-flags.json")));
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("flags"))
            .expect("flags dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut provider = BTreeMap::new();
        let mut merged = json!({});
        for f in &files {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let doc = read_json(f);
            provider.insert(format!("rawflags/{name}"), compile(&doc));
            if !name.starts_with("selector-") {
                deep_merge(&mut merged, doc);
            }
        }
        provider.insert("flags/allFlags.json".into(), compile(&merged));
        let launch = read_json(&dir.join("launchpad/configs/default.json"));
        let static_context = launch
            .get("context-value")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Self {
            evaluator,
            provider,
            static_context,
        }
    }
}

/// Quoted arguments of a step, with `\"` read as a quote inside a string.
fn quoted(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, cur.as_mut()) {
            ('\\', Some(buf)) if chars.peek() == Some(&'"') => {
                buf.push('"');
                chars.next();
            }
            ('"', Some(_)) => out.extend(cur.take()),
            ('"', None) => cur = Some(String::new()),
            (c, Some(buf)) => buf.push(c),
            _ => {}
        }
    }
    out
}

fn typed(ty: &str, raw: &str) -> Result<Value, String> {
    let v = match ty {
        "Boolean" => Value::Bool(raw.parse().map_err(|_| format!("bad boolean {raw:?}"))?),
        "Integer" => Value::from(
            raw.parse::<i64>()
                .map_err(|_| format!("bad integer {raw:?}"))?,
        ),
        "Float" => json!(
            raw.parse::<f64>()
                .map_err(|_| format!("bad float {raw:?}"))?
        ),
        "String" => Value::String(raw.to_owned()),
        "Object" => serde_json::from_str(&raw.replace("\\\"", "\""))
            .map_err(|e| format!("bad object {raw:?}: {e}"))?,
        other => return Err(format!("unknown type {other}")),
    };
    Ok(v)
}

fn value_type(ty: &str) -> Result<ValueType, String> {
    Ok(match ty {
        "Boolean" => ValueType::Boolean,
        "Integer" => ValueType::Integer,
        "Float" => ValueType::Float,
        "String" => ValueType::String,
        "Object" => ValueType::Object,
        other => return Err(format!("unknown flag type {other}")),
    })
}

fn same(ty: &str, want: &Value, got: &Value) -> bool {
    match ty {
        "Float" => want.as_f64().is_some() && want.as_f64() == got.as_f64(),
        "Integer" => {
            want.as_f64().is_some()
                && want.as_f64() == got.as_f64()
                && got.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => want == got,
    }
}

#[derive(Default)]
struct Run {
    provider: bool,
    selector: Option<String>,
    flag: Option<(String, String, Value)>,
    context: Map<String, Value>,
    result: Option<Outcome>,
}

struct Outcome {
    value: Value,
    reason: String,
    error_code: String,
    metadata: Map<String, Value>,
}

impl Run {
    fn step(
        &mut self,
        sources: &Sources,
        text: &str,
        table: Option<&[Vec<String>]>,
    ) -> Result<(), String> {
        let q = quoted(text);
        let arg = |i: usize| {
            q.get(i)
                .cloned()
                .ok_or_else(|| format!("step has too few arguments: {text}"))
        };
        if text == "an evaluator" {
            self.provider = false;
        } else if text == "a stable flagd provider" || text == "a metadata flagd provider" {
            self.provider = true;
        } else if text.starts_with("an option \"selector\"") {
            self.selector = Some(arg(2)?);
        } else if text.starts_with("an option \"cache\"") {
            // Caching is a provider concern; the evaluator never caches.
        } else if let Some(rest) = text
            .strip_prefix("a ")
            .filter(|_| text.contains("-flag with key"))
        {
            let ty = rest.split('-').next().unwrap_or_default().to_owned();
            // The default may be a JSON object full of quotes: it runs to the last quote.
            let raw = text
                .split_once("value \"")
                .map(|(_, r)| r.strip_suffix('"').unwrap_or(r))
                .ok_or("no default value")?;
            let default = typed(&ty, raw)?;
            self.flag = Some((ty, arg(0)?, default));
        } else if text.starts_with("a context containing a targeting key with value") {
            self.context
                .insert("targetingKey".into(), Value::String(arg(0)?));
        } else if text.starts_with("a context containing a key") {
            self.context.insert(arg(0)?, typed(&arg(1)?, &arg(2)?)?);
        } else if text.starts_with("a context containing a nested property") {
            let outer = self.context.entry(arg(0)?).or_insert_with(|| json!({}));
            if let Value::Object(o) = outer {
                o.insert(arg(1)?, Value::String(arg(2)?));
            }
        } else if text == "the flag was evaluated with details" {
            self.evaluate(sources)?;
        } else if text.starts_with("the resolved details value should be") {
            let (ty, _, _) = self.flag.as_ref().ok_or("no flag")?;
            let raw = text
                .find('"')
                .zip(text.rfind('"'))
                .map(|(a, b)| &text[a + 1..b])
                .unwrap_or_default();
            let want = typed(ty, raw)?;
            let got = &self.outcome()?.value;
            if !same(ty, &want, got) {
                return Err(format!("value: want {want}, got {got}"));
            }
        } else if text.starts_with("the reason should be") {
            let want = arg(0)?;
            let got = &self.outcome()?.reason;
            if *got != want {
                return Err(format!("reason: want {want}, got {got}"));
            }
        } else if text.starts_with("the error-code should be") {
            let want = arg(0)?;
            let got = &self.outcome()?.error_code;
            if *got != want {
                return Err(format!("error code: want {want:?}, got {got:?}"));
            }
        } else if text == "the resolved metadata is empty" {
            let got = &self.outcome()?.metadata;
            if !got.is_empty() {
                return Err(format!(
                    "metadata: want empty, got {}",
                    Value::Object(got.clone())
                ));
            }
        } else if text == "the resolved metadata should contain" {
            let rows = table.ok_or("metadata step without a table")?;
            let got = &self.outcome()?.metadata;
            for row in rows.iter().skip(1) {
                let [key, ty, raw] = row.as_slice() else {
                    return Err("bad metadata row".into());
                };
                let want = typed(ty, raw)?;
                match got.get(key) {
                    Some(v) if same(ty, &want, v) => {}
                    other => return Err(format!("metadata {key}: want {want}, got {other:?}")),
                }
            }
        } else {
            return Err(format!("unsupported step: {text}"));
        }
        Ok(())
    }

    fn outcome(&self) -> Result<&Outcome, String> {
        self.result
            .as_ref()
            .ok_or_else(|| "the flag was not evaluated".to_owned())
    }

    fn evaluate(&mut self, sources: &Sources) -> Result<(), String> {
        let (ty, key, default) = self.flag.clone().ok_or("no flag given")?;
        let snapshot = if self.provider {
            let name = self.selector.as_deref().unwrap_or("flags/allFlags.json");
            sources
                .provider
                .get(name)
                .ok_or_else(|| format!("unknown selector {name}"))?
        } else {
            &sources.evaluator
        };
        let mut ctx = self.context.clone();
        if self.provider {
            for (k, v) in &sources.static_context {
                ctx.insert(k.clone(), v.clone());
            }
        }
        let ctx = EvaluationContext::from_json(&Value::Object(ctx)).map_err(|e| e.to_string())?;
        let d = snapshot.evaluate_as(&key, &ctx, value_type(&ty)?);
        self.result = Some(Outcome {
            value: d.value.cloned().unwrap_or(default),
            reason: d.reason.as_str().to_owned(),
            error_code: d
                .error_code
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            metadata: d.flag_metadata.clone(),
        });
        Ok(())
    }
}

struct Case {
    name: String,
    steps: Vec<(String, Option<Vec<Vec<String>>>)>,
    tags: Vec<String>,
}

fn substitute(s: &str, header: &[String], row: &[String]) -> String {
    let mut out = s.to_owned();
    for (h, v) in header.iter().zip(row) {
        out = out.replace(&format!("<{h}>"), v);
    }
    out
}

fn expand(feature: &Feature, sc: &Scenario) -> Vec<Case> {
    let mut steps: Vec<&Step> = feature
        .background
        .iter()
        .flat_map(|b| b.steps.iter())
        .collect();
    steps.extend(sc.steps.iter());
    let base_tags: Vec<String> = feature.tags.iter().chain(&sc.tags).cloned().collect();
    let plain = |header: &[String], row: &[String]| -> Vec<(String, Option<Vec<Vec<String>>>)> {
        steps
            .iter()
            .map(|s| {
                let table = s.table.as_ref().map(|t| {
                    t.rows
                        .iter()
                        .map(|r| r.iter().map(|c| substitute(c, header, row)).collect())
                        .collect()
                });
                (substitute(&s.value, header, row), table)
            })
            .collect()
    };
    if sc.examples.is_empty() {
        return vec![Case {
            name: sc.name.clone(),
            steps: plain(&[], &[]),
            tags: base_tags,
        }];
    }
    let mut out = Vec::new();
    for ex in &sc.examples {
        let Some(table) = &ex.table else { continue };
        let Some((header, rows)) = table.rows.split_first() else {
            continue;
        };
        let tags: Vec<String> = base_tags.iter().chain(&ex.tags).cloned().collect();
        for row in rows {
            out.push(Case {
                name: format!("{} | {}", sc.name, row.join(" | ")),
                steps: plain(header, row),
                tags: tags.clone(),
            });
        }
    }
    out
}

/// The testbed writes `\"` and `\u0000` inside table cells, escapes the gherkin crate
/// refuses. A quote needs no escape there, and any other backslash is meant literally.
fn gherkin_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('"') => {}
            Some('|' | 'n') => out.push('\\'),
            Some('\\') => {
                out.push_str("\\\\");
                chars.next();
            }
            _ => out.push_str("\\\\"),
        }
    }
    out
}

#[test]
fn flagd_testbed_conformance() {
    let Some(dir) = testbed_dir() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the flagd testbed is missing: expected ../shared/conformance/flagd-testbed beside the repository (or FLAGD_TESTBED_DIR)"
        );
        println!(
            "SKIPPED: flagd testbed not found beside the repository (../shared/conformance/flagd-testbed); set FLAGD_TESTBED_DIR to run it"
        );
        return;
    };
    let sources = Sources::load(&dir);
    let mut features: Vec<PathBuf> = ["evaluator/gherkin", "gherkin"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(dir.join(d))
                .expect("gherkin dir")
                .filter_map(|e| e.ok().map(|e| e.path()))
        })
        .filter(|p| p.extension().is_some_and(|x| x == "feature"))
        .collect();
    features.sort();

    let (mut passed, mut total) = (0, 0);
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for path in &features {
        let rel = path
            .strip_prefix(&dir)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        let text = gherkin_escapes(
            &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{rel}: {e}")),
        );
        let feature =
            Feature::parse(&text, GherkinEnv::default()).unwrap_or_else(|e| panic!("{rel}: {e:?}"));
        let scenarios = feature
            .scenarios
            .iter()
            .chain(feature.rules.iter().flat_map(|r| r.scenarios.iter()));
        for sc in scenarios {
            for case in expand(&feature, sc) {
                if let Some((_, why)) = OUT_OF_SCOPE_FEATURES.iter().find(|(f, _)| *f == rel) {
                    *skipped.entry(format!("{rel}: {why}")).or_default() += 1;
                    continue;
                }
                if let Some((tag, why)) = OUT_OF_SCOPE_TAGS
                    .iter()
                    .find(|(t, _)| case.tags.iter().any(|c| c == t))
                {
                    *skipped.entry(format!("@{tag}: {why}")).or_default() += 1;
                    continue;
                }
                total += 1;
                let mut run = Run::default();
                let res = case
                    .steps
                    .iter()
                    .try_for_each(|(text, table)| run.step(&sources, text, table.as_deref()));
                match res {
                    Ok(()) => passed += 1,
                    Err(e) => failures.push(format!("{rel}: {}: {e}", case.name)),
                }
            }
        }
    }
    println!("out of scope:");
    for (why, n) in &skipped {
        println!("  {n:>4}  {why}");
    }
    for f in &failures {
        println!("FAILED {f}");
    }
    println!("{passed} of {total} in-scope scenarios passed");
    assert!(
        total > 200,
        "only {total} in-scope scenarios found: the testbed copy looks incomplete"
    );
    assert_eq!(
        passed,
        total,
        "{} conformance scenarios failed",
        failures.len()
    );
}
