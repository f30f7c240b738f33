//! The fuzzers' smoke test: replays every committed corpus input (`fuzz/corpus/<target>/`)
//! and every crash reproducer kept as a regression (`tests/fuzz_regressions/<target>/`)
//! through the fuzz target bodies in `flagd_core::fuzzing`.
//!
//! Two lists keep found-but-unfixed bugs honest: `KNOWN_FAILING` names reproducers that
//! still make a body panic (none now), and `FIXED_BUGS` the bugs found and fixed, each
//! with a check that it stays fixed.

use std::panic;
use std::path::{Path, PathBuf};

use flagd_core::{FlagSet, Strictness, fuzzing};

type Body = fn(&[u8]);

const TARGETS: &[(&str, Body)] = &[
    ("flag_set", fuzzing::flag_set),
    ("wire_frame", fuzzing::wire_frame),
    ("context", fuzzing::context),
];

/// Reproducers (`<target>/<file>`) of bugs not fixed yet, each with what it shows.
const KNOWN_FAILING: &[(&str, &str)] = &[];

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn runs(body: Body, data: &[u8]) -> Result<(), String> {
    panic::catch_unwind(|| body(data)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

#[test]
fn corpus_replays_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut total = 0;
    for (target, body) in TARGETS {
        let inputs = files(&root.join("fuzz/corpus").join(target));
        assert!(!inputs.is_empty(), "no corpus for {target}");
        for input in &inputs {
            let data = std::fs::read(input).expect("a readable corpus file");
            if let Err(e) = runs(*body, &data) {
                panic!("{}: {e}", input.display());
            }
        }
        total += inputs.len();
    }
    println!("{total} corpus inputs replayed");
}

#[test]
fn regressions_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut failures = Vec::new();
    for (target, body) in TARGETS {
        for input in files(&root.join(target)) {
            let name = format!(
                "{target}/{}",
                input.file_name().unwrap_or_default().to_string_lossy()
            );
            let data = std::fs::read(&input).expect("a readable reproducer");
            let known = KNOWN_FAILING.iter().find(|(n, _)| *n == name);
            match (runs(*body, &data), known) {
                (Ok(()), None) => {}
                (Err(_), Some((_, what))) => {
                    println!("known failing, not fixed yet: {name}: {what}");
                }
                (Err(e), None) => failures.push(format!("{name}: {e}")),
                (Ok(()), Some(_)) => {
                    failures.push(format!("{name} passes now: remove it from KNOWN_FAILING"));
                }
            }
        }
    }
    for (name, _) in KNOWN_FAILING {
        assert!(
            root.join(name).is_file(),
            "KNOWN_FAILING lists a missing file: {name}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Whether a reproducer still shows its bug.
type StillPresent = fn(&str) -> bool;

/// Bugs found by fuzzing and fixed since: a reproducer in `fuzz_regressions/` and a
/// check that it no longer shows the bug (the bodies replay them too, without any
/// tolerance).
const FIXED_BUGS: &[(&str, &str, StillPresent)] = &[
    (
        "flag_set/float-drifts-through-text.json",
        "serde_json without its `float_roundtrip` feature (now on) read the 65-digit \
         24444...445 (correctly 2.4444444444444444e64) as 2.4444444444444447e64, \
         written so and read back as 2.444444444444445e64: a flag set written as text \
         and read again changed a number by one ulp (original crash input: \
         fractional-weight-drifts-through-text.json)",
        drifts_through_text,
    ),
    (
        "flag_set/null-metadata-written-as-empty.json",
        "a valid top-level \"metadata\": null was written back as {}",
        changes_when_written_back,
    ),
    (
        "flag_set/null-evaluators-written-as-empty.json",
        "a valid top-level \"$evaluators\": null was written back as {}",
        changes_when_written_back,
    ),
    (
        "flag_set/null-flag-metadata-dropped.json",
        "a valid flag's \"metadata\": null was dropped when written back",
        changes_when_written_back,
    ),
];

/// The document, read leniently and written back, changes through text.
fn drifts_through_text(text: &str) -> bool {
    let set = FlagSet::parse_str(text, Strictness::Lenient).expect("a lenient flag set");
    let json = set.to_json();
    let again: serde_json::Value = serde_json::from_str(&json.to_string()).expect("JSON");
    again != json
}

/// The document is valid and changes when read and written back.
fn changes_when_written_back(text: &str) -> bool {
    let set = FlagSet::parse_str(text, Strictness::Strict).expect("a valid flag set");
    set.to_json() != serde_json::from_str::<serde_json::Value>(text).expect("JSON")
}

#[test]
fn fixed_bugs_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    for (name, what, still_present) in FIXED_BUGS {
        let text = std::fs::read_to_string(root.join(name)).expect("the reproducer");
        assert!(!still_present(&text), "back again: {name}: {what}");
    }
}
