//! Bucketing can never drift silently: golden vectors, cohort stability when a rollout is
//! ramped, and the distribution over many keys.

use flagd_core::{EvaluationContext, Murmur3, Snapshot, bucket, murmur3_x86_32};
use proptest::prelude::*;
use serde_json::json;

const GOLDEN: &str = "tests/vectors/bucketing.csv";

/// Two flags: `edge` buckets the targeting key itself (so the hash-edge preimages hit
/// hashes 0, 1, 2^31-1, 2^31 and 2^32-1), `new-checkout` uses the default bucketing
/// value, flag key + targeting key.
fn golden_snapshot() -> Snapshot {
    let doc = json!({"flags": {
        "edge": {"state": "ENABLED", "variants": {"a": "a", "b": "b", "c": "c", "d": "d"},
                 "targeting": {"fractional": [{"var": "targetingKey"}, ["a", 10], ["b", 20], ["c", 30], ["d", 40]]}},
        "new-checkout": {"state": "ENABLED", "variants": {"a": "a", "b": "b", "c": "c", "d": "d"},
                 "targeting": {"fractional": [["a", 10], ["b", 20], ["c", 30], ["d", 40]]}}
    }});
    Snapshot::from_json_str(&doc.to_string(), 1).unwrap()
}

fn golden_keys() -> Vec<String> {
    let mut keys: Vec<String> = ["ejOoVL", "bY9fO-", "SI7p-", "6LvT0", "ceQdGm"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    keys.extend((0..40).map(|i| format!("user-{i}")));
    keys.extend(
        ["jon@company.com", "Ærøskøbing", "用户-7", "a", "🙂"]
            .iter()
            .map(|s| s.to_string()),
    );
    keys
}

fn golden_rows() -> String {
    let snap = golden_snapshot();
    let mut out = String::from(
        "# flag,targeting_key,hashed,hash,bucket,variant  (weights a 10, b 20, c 30, d 40; bucket = hash*100>>32)\n",
    );
    for flag in ["edge", "new-checkout"] {
        for key in golden_keys() {
            let hashed = if flag == "edge" {
                key.clone()
            } else {
                format!("{flag}{key}")
            };
            let hash = murmur3_x86_32(hashed.as_bytes());
            let b = bucket(hash, 100);
            let variant = snap
                .evaluate(flag, &EvaluationContext::new(key.as_str()))
                .variant
                .unwrap_or("-")
                .to_owned();
            out.push_str(&format!("{flag},{key},{hashed},{hash},{b},{variant}\n"));
        }
    }
    out
}

#[test]
fn golden_vectors() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    let now = golden_rows();
    if std::env::var("UPDATE_GOLDEN").is_ok() {
        std::fs::write(&path, &now).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        committed, now,
        "bucketing differs from the committed golden vectors in {GOLDEN}"
    );
    // The edge keys really are the edges, independently of our own hash code.
    let edges: Vec<u32> = committed
        .lines()
        .filter(|l| l.starts_with("edge,"))
        .take(5)
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        edges,
        vec![0, 1, 2_147_483_647, 2_147_483_648, 4_294_967_295]
    );
    for line in committed.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let reference = murmur3::murmur3_32(&mut cols[2].as_bytes(), 0).unwrap();
        assert_eq!(reference.to_string(), cols[3], "{line}");
    }
}

fn rollout(p: u32) -> Snapshot {
    let doc = json!({"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
        "targeting": {"fractional": [["on", p], ["off", 100 - p]]}}}});
    Snapshot::from_json_str(&doc.to_string(), u64::from(p)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Raising `[on, p], [off, 100-p]` never turns off a user who was on.
    #[test]
    fn ramping_up_keeps_the_cohort(key in "\\PC{1,40}", p1 in 0u32..=100, p2 in 0u32..=100) {
        let (lo, hi) = if p1 <= p2 { (p1, p2) } else { (p2, p1) };
        let ctx = EvaluationContext::new(key);
        if rollout(lo).enabled("new-checkout", &ctx) {
            prop_assert!(rollout(hi).enabled("new-checkout", &ctx));
        }
    }

    /// The streaming hasher equals the reference murmur3 crate on any bytes, however split.
    #[test]
    fn streaming_murmur3_matches_reference(bytes in proptest::collection::vec(any::<u8>(), 0..200), split in 0usize..200) {
        let split = split.min(bytes.len());
        let mut m = Murmur3::new(0);
        m.write(&bytes[..split]);
        m.write(&bytes[split..]);
        let reference = murmur3::murmur3_32(&mut bytes.as_slice(), 0).unwrap();
        prop_assert_eq!(m.finish(), reference);
        prop_assert_eq!(murmur3_x86_32(&bytes), reference);
    }
}

#[test]
fn ramp_5_25_100_never_turns_anyone_off() {
    let steps = [rollout(5), rollout(25), rollout(100)];
    for i in 0..20_000 {
        let ctx = EvaluationContext::new(format!("user-{i}"));
        let on: Vec<bool> = steps
            .iter()
            .map(|s| s.enabled("new-checkout", &ctx))
            .collect();
        assert!((!on[0] || on[1]) && (!on[1] || on[2]), "user-{i}: {on:?}");
        assert!(on[2]);
    }
}

#[test]
fn distribution_over_100k_keys_is_within_one_point() {
    for weights in [
        vec![10u32, 90],
        vec![25, 25, 50],
        vec![33, 33, 34],
        vec![1, 99],
        vec![5, 5, 5, 85],
    ] {
        let buckets: Vec<serde_json::Value> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| json!([format!("v{i}"), w]))
            .collect();
        let variants: serde_json::Map<String, serde_json::Value> = (0..weights.len())
            .map(|i| (format!("v{i}"), json!(i)))
            .collect();
        let doc = json!({"flags": {"split": {"state": "ENABLED", "variants": variants, "targeting": {"fractional": buckets}}}});
        let snap = Snapshot::from_json_str(&doc.to_string(), 1).unwrap();
        let mut counts = vec![0u32; weights.len()];
        let n = 100_000;
        for i in 0..n {
            let v = snap.int_value("split", &EvaluationContext::new(format!("user-{i}")), -1);
            counts[usize::try_from(v).unwrap()] += 1;
        }
        let total: u32 = weights.iter().sum();
        for (i, (&c, &w)) in counts.iter().zip(&weights).enumerate() {
            let got = f64::from(c) * 100.0 / f64::from(n);
            let want = f64::from(w) * 100.0 / f64::from(total);
            assert!(
                (got - want).abs() <= 1.0,
                "{weights:?} arm {i}: {got:.2}% vs {want:.2}%"
            );
        }
    }
}
