//! `flagctl validate` and `flagctl eval`, run as the real binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn flagctl(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flagctl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = stdin.unwrap_or_default().to_owned();
    let mut pipe = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p.to_string_lossy().into_owned()
}

const GOOD: &str = r#"{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
      "targeting": {"if": [{"in": [{"var": "country"}, ["NO", "SE"]]}, "on", {"fractional": [["on", 25], ["off", 75]]}]}},
    "banner": {"state": "DISABLED", "variants": {"a": "A"}, "defaultVariant": "a"}
  }
}"#;

#[test]
fn validate_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "good.json", GOOD);
    let out = flagctl(&["validate", &f], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{f}: valid (2 flags)\n"));
}

#[test]
fn validate_reports_every_problem_with_file_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(&dir, "good.json", GOOD);
    let bad = write(
        &dir,
        "bad.json",
        r#"{"flags": {"new-checkout": {"state": "ON", "variants": {"on": true, "off": false}, "defaultVariant": "onn",
            "targeting": {"if": [{"sem_ver": [{"var": "v"}, "=>", "1.0.0"]}, "on", "off"]}}}}"#,
    );
    let broken = write(&dir, "broken.json", "{\"flags\": {");
    let out = flagctl(&["validate", &good, &bad, &broken], None);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("{good}: valid (2 flags)"),
            format!("{bad}: flags.new-checkout.state: \"ON\" is not a state (ENABLED, DISABLED)"),
            format!("{bad}: flags.new-checkout.defaultVariant: \"onn\" is not a variant (on, off)"),
            format!(
                "{bad}: flags.new-checkout.targeting.if[0].sem_ver[1]: \"=>\" is not a sem_ver operator (=, !=, <, <=, >, >=, ~, ^)"
            ),
            format!("{broken}: invalid JSON at line 1 column 11: EOF while parsing an object"),
        ]
    );

    let out = flagctl(
        &["validate", "--json", &good, &bad, "/no/such/file.json"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], json!(false));
    assert_eq!(report["files"][0]["valid"], json!(true));
    assert_eq!(report["files"][0]["flags"], json!(2));
    assert_eq!(report["files"][1]["errors"].as_array().unwrap().len(), 3);
    assert_eq!(
        report["files"][1]["errors"][1],
        json!({"path": "flags.new-checkout.defaultVariant", "message": "\"onn\" is not a variant (on, off)"})
    );
    assert!(
        report["files"][2]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot read the file")
    );
}

#[test]
fn validate_without_files_is_a_usage_error() {
    assert_eq!(flagctl(&["validate"], None).status.code(), Some(2));
}

#[test]
fn eval_one_flag() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "good.json", GOOD);
    let out = flagctl(
        &[
            "eval",
            "--flags",
            &f,
            "--flag",
            "new-checkout",
            "--context",
            r#"{"targetingKey": "u1", "country": "NO"}"#,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "{\"flag\":\"new-checkout\",\"value\":true,\"variant\":\"on\",\"reason\":\"TARGETING_MATCH\"}\n"
    );

    let out = flagctl(&["eval", "--flags", &f, "--flag", "banner"], None);
    assert_eq!(
        text(&out.stdout),
        "{\"flag\":\"banner\",\"reason\":\"DISABLED\"}\n"
    );

    let out = flagctl(&["eval", "--flags", &f, "--flag", "nope"], None);
    assert_eq!(
        text(&out.stdout),
        "{\"flag\":\"nope\",\"reason\":\"ERROR\",\"errorCode\":\"FLAG_NOT_FOUND\"}\n"
    );

    let out = flagctl(
        &[
            "eval",
            "--flags",
            &f,
            "--flag",
            "banner",
            "--context",
            "[1]",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--context must be a JSON object"));
}

#[test]
fn eval_refuses_a_file_flagd_would_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "bad.json",
        r#"{"flags": {"x": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "b"}}}"#,
    );
    let out = flagctl(&["eval", "--flags", &f, "--flag", "x"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("flags.x.defaultVariant: \"b\" is not a variant (a)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn eval_cases_in_order_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "good.json", GOOD);
    let cases = [
        r#"{"flag": "new-checkout", "context": {"targetingKey": "u1", "country": "SE"}}"#,
        r#"{"flag": "banner", "context": {}}"#,
        "",
        r#"{"flag": "new-checkout"}"#,
        r#"{"flag": "new-checkout", "context": "nope"}"#,
        r#"not json"#,
        r#"{"flag": "missing", "context": {"targetingKey": "u2"}}"#,
    ]
    .join("\n");
    let out = flagctl(&["eval", "--flags", &f, "--cases", "-"], Some(&cases));
    assert_eq!(out.status.code(), Some(1), "two malformed cases");
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            json!({"flag": "new-checkout", "value": true, "variant": "on", "reason": "TARGETING_MATCH"}),
            json!({"flag": "banner", "reason": "DISABLED"}),
            json!({"flag": "new-checkout", "value": false, "variant": "off", "reason": "DEFAULT"}),
            json!({"flag": "new-checkout", "reason": "ERROR", "errorCode": "INVALID_CONTEXT"}),
            json!({"flag": "", "reason": "ERROR", "errorCode": "INVALID_CONTEXT"}),
            json!({"flag": "missing", "reason": "ERROR", "errorCode": "FLAG_NOT_FOUND"}),
        ]
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 5: context: must be a JSON object"),
        "{stderr}"
    );
    assert!(stderr.contains("line 6: expected"), "{stderr}");
}

#[test]
fn eval_100k_cases_matches_the_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "good.json", GOOD);
    let mut cases = String::new();
    for i in 0..100_000 {
        cases.push_str(&format!("{{\"flag\":\"new-checkout\",\"context\":{{\"targetingKey\":\"user-{i}\",\"country\":\"US\"}}}}\n"));
    }
    let path = write(&dir, "cases.jsonl", &cases);
    let out = flagctl(&["eval", "--flags", &f, "--cases", &path], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let snapshot = flagd_core::Snapshot::from_json_str(GOOD, 0).unwrap();
    let mut n = 0;
    let mut on = 0;
    for (i, line) in stdout.lines().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        let ctx = flagd_core::EvaluationContext::new(format!("user-{i}")).with("country", "US");
        let want = snapshot.enabled("new-checkout", &ctx);
        assert_eq!(v["value"], json!(want), "case {i}");
        on += usize::from(want);
        n += 1;
    }
    assert_eq!(n, 100_000);
    assert!(
        (24_000..26_000).contains(&on),
        "{on} of 100000 in the 25% arm"
    );
}

/// The example flag file is valid, and its cases give the committed expected results:
/// the "test your flag file before you ship it" workflow of the README.
#[test]
fn example_flag_file_and_cases() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flags");
    let flags = root.join("checkout.json");
    let flags = flags.to_str().unwrap();
    let out = flagctl(&["validate", flags], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let cases = root.join("cases.jsonl");
    let out = flagctl(
        &["eval", "--flags", flags, "--cases", cases.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected = std::fs::read_to_string(root.join("cases.expected.jsonl")).unwrap();
    assert_eq!(text(&out.stdout), expected);
}

/// `$ref` is compiled once and shared: a file referencing a 2,000-comparison evaluator
/// 10,000 times (235 KB) is refused by `validate` with the flag's path and evaluates in
/// `eval` (the SDK's loader) with reason ERROR for that flag alone, in bounded memory.
#[test]
fn ref_bombs_are_refused_and_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<Value> = (0..2_000)
        .map(|i| json!({"==": [{"var": "x"}, format!("v{i}")]}))
        .collect();
    let doc = json!({
        "$evaluators": {"big": {"or": big}},
        "flags": {
            "bomb": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"if": [{"or": vec![json!({"$ref": "big"}); 10_000]}, "on", "off"]}},
            "ok": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}
        }
    });
    let f = write(&dir, "bomb.json", &doc.to_string());
    let out = flagctl(&["validate", &f], None);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        said.contains(
            "flags.bomb.targeting: compiles to more than 100000 nodes (each \"$ref\" counts as the size of its evaluator every time it is used)"
        ),
        "{said}"
    );
    let out = flagctl(&["eval", "--flags", &f, "--flag", "bomb"], None);
    let line: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(
        (line["reason"].clone(), line["errorCode"].clone()),
        (json!("ERROR"), json!("PARSE_ERROR")),
        "{line}"
    );
    let out = flagctl(&["eval", "--flags", &f, "--flag", "ok"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(line["value"], true, "{line}");
}

/// A flagd file whose keys a flagd server cannot take in still evaluates (flagd loads
/// it), with a warning naming each key.
#[test]
fn eval_warns_about_keys_a_server_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let doc = json!({"flags": {
        "a\nb": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
        "..": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
        "fine": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}
    }});
    let f = write(&dir, "keys.json", &doc.to_string());
    let out = flagctl(&["eval", "--flags", &f, "--flag", "fine"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: flag \"a\\nb\": a flag key must not contain control characters (found U+000A); a flagd server refuses it"),
        "{stderr}"
    );
    assert!(stderr.contains("warning: flag \"..\""), "{stderr}");
    assert!(!stderr.contains("\"fine\""), "{stderr}");
}
