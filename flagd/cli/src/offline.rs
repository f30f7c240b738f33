//! The commands that need no server: `flagctl validate` and `flagctl eval`.

use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use flagd_core::{Detail, EvaluationContext, FlagSet, Problem, Snapshot, Strictness};
use serde::Serialize;
use serde_json::Value;

use super::exit;

/// `flagctl validate FILE...`
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Flag files in flagd's JSON format.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// `flagctl eval --flags FILE (--flag KEY [--context JSON] | --cases FILE.jsonl)`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["flag", "cases"])))]
pub struct EvalArgs {
    /// The flag file (flagd JSON format), loaded as flagd loads it.
    #[arg(long, value_name = "FILE")]
    flags: PathBuf,
    /// Evaluate this one flag.
    #[arg(long, value_name = "KEY")]
    flag: Option<String>,
    /// The evaluation context for --flag, a JSON object; `targetingKey` is the targeting key.
    #[arg(long, value_name = "JSON", requires = "flag", default_value = "{}")]
    context: String,
    /// Evaluate every case of a JSON Lines file, each `{"flag": "...", "context": {...}}`;
    /// one result line per case, in order. `-` reads standard input.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with = "flag")]
    cases: Option<PathBuf>,
}

#[derive(Serialize)]
struct FileReport<'a> {
    file: String,
    valid: bool,
    flags: usize,
    errors: &'a [Problem],
}

fn read_file(path: &Path) -> Result<String, Problem> {
    fs::read_to_string(path).map_err(|e| Problem {
        path: String::new(),
        message: format!("cannot read the file: {e}"),
    })
}

/// Strictly validates each file; reports every problem.
pub fn validate(args: &ValidateArgs, json: bool, mut out: impl Write, mut err: impl Write) -> u8 {
    let mut all_valid = true;
    let mut reports = Vec::new();
    for file in &args.files {
        let (flags, problems) = match read_file(file) {
            Err(p) => (0, vec![p]),
            Ok(text) => match FlagSet::parse_str(&text, Strictness::Strict) {
                Ok(set) => (set.flags.len(), Vec::new()),
                Err(e) => (0, e.0),
            },
        };
        all_valid &= problems.is_empty();
        reports.push((file.display().to_string(), flags, problems));
    }
    let written = if json {
        let files: Vec<FileReport<'_>> = reports
            .iter()
            .map(|(file, flags, errors)| FileReport {
                file: file.clone(),
                valid: errors.is_empty(),
                flags: *flags,
                errors,
            })
            .collect();
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({"valid": all_valid, "files": files}),
        )
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
    } else {
        reports.iter().try_for_each(|(file, flags, errors)| {
            if errors.is_empty() {
                writeln!(
                    out,
                    "{file}: valid ({flags} flag{})",
                    if *flags == 1 { "" } else { "s" }
                )
            } else {
                errors.iter().try_for_each(|p| {
                    if p.path.is_empty() {
                        writeln!(out, "{file}: {}", p.message)
                    } else {
                        writeln!(out, "{file}: {}: {}", p.path, p.message)
                    }
                })
            }
        })
    };
    if let Err(e) = written {
        let _ = writeln!(err, "flagctl: cannot write the report: {e}");
        return exit::FAILED;
    }
    if all_valid { exit::OK } else { exit::FAILED }
}

/// One result line of `flagctl eval`.
#[derive(Serialize)]
struct EvalLine<'a> {
    flag: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    reason: &'static str,
    #[serde(rename = "errorCode", skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
}

impl<'a> EvalLine<'a> {
    fn new(flag: &'a str, d: &Detail<'a>) -> Self {
        Self {
            flag,
            value: d.value,
            variant: d.variant,
            reason: d.reason.as_str(),
            error_code: d.error_code.map(|c| c.as_str()),
        }
    }

    fn invalid_context(flag: &'a str) -> Self {
        Self {
            flag,
            value: None,
            variant: None,
            reason: "ERROR",
            error_code: Some("INVALID_CONTEXT"),
        }
    }
}

#[derive(serde::Deserialize)]
struct Case {
    flag: String,
    #[serde(default)]
    context: Option<Value>,
}

fn load_snapshot(path: &Path, err: &mut impl Write) -> Option<Snapshot> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(
                err,
                "flagctl: {}: cannot read the file: {e}",
                path.display()
            );
            return None;
        }
    };
    // A file flagd would refuse is refused here too, with every problem; the SDK would
    // serve its other flags (and the problem flags with reason ERROR).
    let set = match flagd_core::FlagSet::parse_str(&text, flagd_core::Strictness::Lenient) {
        Ok(set) => set,
        Err(e) => {
            for line in e.to_string().lines() {
                let _ = writeln!(err, "flagctl: {}: {line}", path.display());
            }
            return None;
        }
    };
    // flagd loads such a file, but a flagd server could not take these keys in: say so.
    let keys = set
        .flags
        .keys()
        .map(|k| ("flag", k))
        .chain(set.evaluators.keys().map(|k| ("evaluator", k)));
    for (what, key) in keys {
        if let Err(why) = flagd_core::check_key(key) {
            let _ = writeln!(
                err,
                "flagctl: {}: warning: {what} {}: a {what} key {why}; a flagd server refuses it",
                path.display(),
                Value::String(key.clone())
            );
        }
    }
    match Snapshot::from_json_str(&text, 0) {
        Ok(s) => Some(s),
        Err(e) => {
            for line in e.to_string().lines() {
                let _ = writeln!(err, "flagctl: {}: {line}", path.display());
            }
            None
        }
    }
}

fn context_of(json: Option<&Value>) -> Option<EvaluationContext> {
    match json {
        None | Some(Value::Null) => Some(EvaluationContext::empty()),
        Some(v) => EvaluationContext::from_json(v).ok(),
    }
}

/// Evaluates one flag, or every case of a JSON Lines file.
pub fn eval(args: &EvalArgs, out: impl Write, mut err: impl Write) -> u8 {
    let Some(snapshot) = load_snapshot(&args.flags, &mut err) else {
        return exit::FAILED;
    };
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let result = match (&args.flag, &args.cases) {
        (Some(flag), _) => {
            let ctx = serde_json::from_str::<Value>(&args.context)
                .ok()
                .and_then(|v| context_of(Some(&v)));
            let Some(ctx) = ctx else {
                let _ = writeln!(
                    err,
                    "flagctl: --context must be a JSON object, e.g. '{{\"targetingKey\": \"user-1\"}}'"
                );
                return exit::USAGE;
            };
            let d = snapshot.evaluate(flag, &ctx);
            serde_json::to_writer(&mut out, &EvalLine::new(flag, &d))
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
        }
        (None, Some(cases)) => return eval_cases(&snapshot, cases, &mut out, &mut err),
        (None, None) => {
            let _ = writeln!(err, "flagctl: give --flag KEY or --cases FILE.jsonl");
            return exit::USAGE;
        }
    };
    match result.and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(e) => {
            let _ = writeln!(err, "flagctl: cannot write the result: {e}");
            exit::FAILED
        }
    }
}

fn eval_cases(snapshot: &Snapshot, cases: &Path, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let reader: Box<dyn BufRead> = if cases == Path::new("-") {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        match fs::File::open(cases) {
            Ok(f) => Box::new(BufReader::with_capacity(1 << 16, f)),
            Err(e) => {
                let _ = writeln!(
                    err,
                    "flagctl: {}: cannot read the file: {e}",
                    cases.display()
                );
                return exit::FAILED;
            }
        }
    };
    let mut bad_lines = 0usize;
    let mut write_line = |line: &EvalLine<'_>| {
        serde_json::to_writer(&mut *out, line)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    };
    for (n, line) in reader.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let _ = writeln!(err, "flagctl: {}: line {}: {e}", cases.display(), n + 1);
                return exit::FAILED;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let written = match serde_json::from_str::<Case>(&line) {
            Ok(case) => match context_of(case.context.as_ref()) {
                Some(ctx) => write_line(&EvalLine::new(
                    &case.flag,
                    &snapshot.evaluate(&case.flag, &ctx),
                )),
                None => {
                    bad_lines += 1;
                    let _ = writeln!(
                        err,
                        "flagctl: {}: line {}: context: must be a JSON object",
                        cases.display(),
                        n + 1
                    );
                    write_line(&EvalLine::invalid_context(&case.flag))
                }
            },
            Err(e) => {
                bad_lines += 1;
                let _ = writeln!(
                    err,
                    "flagctl: {}: line {}: {e} (expected {{\"flag\": \"...\", \"context\": {{...}}}})",
                    cases.display(),
                    n + 1
                );
                write_line(&EvalLine::invalid_context(""))
            }
        };
        if let Err(e) = written {
            let _ = writeln!(err, "flagctl: cannot write the result: {e}");
            return exit::FAILED;
        }
    }
    if let Err(e) = out.flush() {
        let _ = writeln!(err, "flagctl: cannot write the result: {e}");
        return exit::FAILED;
    }
    if bad_lines > 0 {
        exit::FAILED
    } else {
        exit::OK
    }
}
