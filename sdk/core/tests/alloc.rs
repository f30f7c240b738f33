//! Evaluation allocates nothing on the benchmark shapes S1–S4 (see
//! `../shared/docs/benchmarks.md`): a counting global allocator proves it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use flagd_core::{EvaluationContext, Snapshot};
use serde_json::json;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count(f: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst)
}

fn flag(targeting: serde_json::Value) -> serde_json::Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off", "targeting": targeting})
}

fn contexts() -> Vec<EvaluationContext> {
    let countries = ["NO", "SE", "DK", "US", "DE", "FR"];
    (0..1024)
        .map(|i| {
            EvaluationContext::new(format!("user-{i}"))
                .with("country", countries[i % 6])
                .with("plan", if i % 3 == 0 { "pro" } else { "free" })
        })
        .collect()
}

// One test function: the counter is global, and tests in one binary run in parallel.
#[test]
fn evaluation_does_not_allocate_on_s1_to_s4() {
    let mut flags = serde_json::Map::new();
    flags.insert(
        "s1".into(),
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}),
    );
    flags.insert(
        "s2".into(),
        flag(json!({"fractional": [["on", 10], ["off", 90]]})),
    );
    flags.insert(
        "s3".into(),
        flag(json!({"if": [{"and": [{"in": [{"var": "country"}, ["NO", "SE", "DK"]]}, {"==": [{"var": "plan"}, "pro"]}]}, "on",
            {"fractional": [["on", 25], ["off", 75]]}]})),
    );
    let small = Snapshot::from_json_str(&json!({"flags": flags}).to_string(), 1).unwrap();
    let mut many = serde_json::Map::new();
    for i in 0..1000 {
        many.insert(
            format!("flag-{i}"),
            flag(json!({"fractional": [["on", 10], ["off", 90]]})),
        );
    }
    let large = Snapshot::from_json_str(&json!({"flags": many}).to_string(), 1).unwrap();
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("flag-{}", (i * 7919) % 1000))
        .collect();
    let ctxs = contexts();

    let mut on = 0usize;
    let mut run = |name: &str, f: &mut dyn FnMut(usize) -> bool| {
        let n = count(|| {
            for i in 0..10_000 {
                on += usize::from(f(i));
            }
        });
        assert_eq!(n, 0, "{name}: {n} allocations in 10,000 evaluations");
    };
    run("S1", &mut |i| small.enabled("s1", &ctxs[i % 1024]));
    run("S2", &mut |i| small.enabled("s2", &ctxs[i % 1024]));
    run("S3", &mut |i| small.enabled("s3", &ctxs[i % 1024]));
    run("S4", &mut |i| {
        large.enabled(&keys[i % 1000], &ctxs[i % 1024])
    });
    run("S2 details", &mut |i| {
        small.evaluate("s2", &ctxs[i % 1024]).variant == Some("on")
    });
    assert!(on > 10_000, "the flags did evaluate ({on} on)");

    // The counter itself works: an allocation is seen.
    let n = count(|| drop(std::hint::black_box(vec![1u8; 16])));
    assert_eq!(n, 1);
}
