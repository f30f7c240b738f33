//! Loading a flag set, what every SDK does for each snapshot and flagd for remote
//! evaluation (parse the document, compile every flag):
//!
//! ```text
//! cargo bench -p flagd-bench --bench compile
//! ```
//!
//! - C1 10,000 flags of the S3 shape (`country in [...] and plan == "pro"`, else 25%).
//! - C2 one flag referencing a 2,000-user allow list (`$evaluators`) 1,000 times: each
//!   `$ref` is compiled once per snapshot and shared (before: once per reference).
//! - D1 a one-flag toggle applied to the C1 snapshot (`Snapshot::with_changes`, what the
//!   SDK does per delta): only that flag is read and compiled, the others are shared.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flagd_core::Snapshot;
use flagd_core::wire::{Change, ItemKind};
use serde_json::json;

fn c1() -> String {
    let mut flags = serde_json::Map::new();
    for i in 0..10_000 {
        flags.insert(
            format!("flag-{i}"),
            json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                   "targeting": {"if": [{"and": [{"in": [{"var": "country"}, ["NO", "SE", "DK"]]}, {"==": [{"var": "plan"}, "pro"]}]}, "on", {"fractional": [["on", 25], ["off", 75]]}]}}),
        );
    }
    json!({ "flags": flags }).to_string()
}

fn c2() -> String {
    let users: Vec<String> = (0..2_000).map(|i| format!("user-{i}")).collect();
    json!({
        "$evaluators": {"allow": {"in": [{"var": "targetingKey"}, users]}},
        "flags": {"beta": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"if": [{"or": vec![json!({"$ref": "allow"}); 1_000]}, "on", "off"]}}}
    })
    .to_string()
}

fn compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    g.measurement_time(Duration::from_secs(5)).sample_size(20);
    for (name, text) in [("C1-10000-flags", c1()), ("C2-1000-refs", c2())] {
        assert!(Snapshot::from_json_str(&text, 1).is_ok(), "{name} loads");
        g.bench_function(name, |b| {
            b.iter(|| black_box(Snapshot::from_json_str(black_box(&text), 1).ok()));
        });
    }
    let c1 = Snapshot::from_json_str(&c1(), 1).expect("C1 loads");
    let toggle = [Change {
        kind: ItemKind::Flag,
        key: "flag-5000".into(),
        definition: Some(
            json!({"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"if": [{"and": [{"in": [{"var": "country"}, ["NO", "SE", "DK"]]}, {"==": [{"var": "plan"}, "pro"]}]}, "on", {"fractional": [["on", 25], ["off", 75]]}]}}),
        ),
    }];
    assert!(c1.with_changes(&toggle, 2, |_| None).is_some());
    g.bench_function("D1-toggle-in-10000-flags", |b| {
        b.iter(|| black_box(c1.with_changes(black_box(&toggle), 2, |_| None)));
    });
    g.finish();
}

criterion_group!(benches, compile);
criterion_main!(benches);
