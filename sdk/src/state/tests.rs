//! The frame rules driven with frames alone, no network: each test states the exact
//! step (what is published, replied and logged) and what is served afterwards.

use std::time::{Duration, SystemTime};

use flagd_core::wire::{Change, ClientMsg, ItemKind, ServerMsg};
use flagd_core::{EvaluationContext, Problem, Reason};
use serde_json::{Value, json};

use super::*;

fn empty() -> State {
    let doc = json!({"flags": {}});
    State::new(Arc::new(Current {
        snapshot: Arc::new(compile(&doc, 0).unwrap()),
        version: 0,
        document: Arc::new(Doc::from_value(doc)),
        store: None,
        at: None,
    }))
}

fn flag(on: bool) -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false},
           "defaultVariant": if on { "on" } else { "off" }})
}

fn snapshot(version: u64, flags: Value, store: &str, at: i64) -> ServerMsg {
    ServerMsg::Snapshot {
        version,
        document: json!({ "flags": flags }),
        store: Some(store.to_owned()),
        at: Some(at),
        reset: false,
    }
}

fn reset(version: u64, flags: Value, store: &str, at: i64) -> ServerMsg {
    let mut msg = snapshot(version, flags, store, at);
    if let ServerMsg::Snapshot { reset, .. } = &mut msg {
        *reset = true;
    }
    msg
}

fn delta(from: u64, version: u64, changes: Vec<Change>) -> ServerMsg {
    ServerMsg::Delta {
        from,
        version,
        changes,
        restores: None,
        at: Some(i64::try_from(version).unwrap() * 100),
    }
}

fn revert_delta(from: u64, version: u64, restores: u64, changes: Vec<Change>) -> ServerMsg {
    ServerMsg::Delta {
        from,
        version,
        changes,
        restores: Some(restores),
        at: Some(i64::try_from(version).unwrap() * 100),
    }
}

fn restore(from: u64, version: u64, restores: u64) -> ServerMsg {
    ServerMsg::Restore {
        from,
        version,
        restores,
        at: Some(i64::try_from(version).unwrap() * 100),
    }
}

fn change(kind: ItemKind, key: &str, definition: Option<Value>) -> Change {
    Change {
        kind,
        key: key.to_owned(),
        definition,
    }
}

fn set(key: &str, on: bool) -> Change {
    change(ItemKind::Flag, key, Some(flag(on)))
}

fn on(state: &State, key: &str) -> bool {
    state
        .current()
        .snapshot
        .enabled(key, &EvaluationContext::new("user-1"))
}

fn ack(version: u64) -> Reply {
    Reply::Send(ClientMsg::Ack {
        version,
        problems: Vec::new(),
    })
}

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| (*s).to_owned()).collect()
}

/// Asserts a step that applied `old → new` with the given changed flags, and returns
/// what it published.
fn applied(step: &Step, old: u64, new: u64, changed: &[&str]) -> Arc<Current> {
    let p = step.publish.as_ref().expect("a version is published");
    assert_eq!(p.current.version, new);
    assert_eq!(p.status, Status::Ready { version: new });
    assert_eq!(
        p.change,
        ChangeEvent {
            old_version: old,
            new_version: new,
            changed_flags: keys(changed),
        }
    );
    p.current.clone()
}

fn assert_ignored(step: &Step) {
    assert!(step.publish.is_none());
    assert_eq!(step.reply, Reply::Nothing);
    assert_eq!(step.notes, []);
}

/// Snapshot v1, then deltas 2 and 3, applied in order.
fn at_v3() -> State {
    let mut s = empty();
    s.apply(snapshot(
        1,
        json!({"a": flag(true), "b": flag(false)}),
        "s1",
        10,
    ));
    s.apply(delta(1, 2, vec![set("b", true)]));
    s.apply(delta(2, 3, vec![set("a", false)]));
    assert_eq!(s.current().version, 3);
    s
}

#[test]
fn a_snapshot_then_deltas_apply_in_order() {
    let mut s = empty();

    let step = s.apply(snapshot(
        1,
        json!({"a": flag(true), "b": flag(false)}),
        "s1",
        10,
    ));
    let cur = applied(&step, 0, 1, &["a", "b"]);
    assert_eq!(step.reply, ack(1));
    assert_eq!(step.notes, [Note::Applied { old: 0, version: 1 }]);
    assert!(Arc::ptr_eq(&cur, s.current()));
    assert_eq!((cur.store.as_deref(), cur.at), (Some("s1"), Some(10)));
    assert!(on(&s, "a") && !on(&s, "b"));

    let step = s.apply(delta(
        1,
        2,
        vec![
            set("b", true),
            change(ItemKind::Flag, "a", None),
            change(ItemKind::Flag, "c", Some(flag(true))),
        ],
    ));
    let cur = applied(&step, 1, 2, &["b", "a", "c"]);
    assert_eq!(step.reply, ack(2));
    assert_eq!(step.notes, [Note::Applied { old: 1, version: 2 }]);
    // A delta keeps the store it follows, and carries its own commit time.
    assert_eq!((cur.store.as_deref(), cur.at), (Some("s1"), Some(200)));
    assert_eq!(
        cur.document.to_value(),
        json!({"flags": {"b": flag(true), "c": flag(true)}})
    );
    assert!(!on(&s, "a") && on(&s, "b") && on(&s, "c"));

    // Only flag changes are named in the change event.
    let step = s.apply(delta(
        2,
        3,
        vec![
            change(ItemKind::Evaluator, "e", Some(json!({"==": [1, 1]}))),
            change(ItemKind::Top, "metadata", Some(json!({"team": "x"}))),
        ],
    ));
    applied(&step, 2, 3, &[]);
    assert_eq!(step.reply, ack(3));
    assert_eq!(
        s.current().document.to_value()["metadata"],
        json!({"team": "x"})
    );
}

#[test]
fn a_delta_after_a_gap_reconnects_and_changes_nothing() {
    let mut s = empty();
    s.apply(snapshot(1, json!({"a": flag(true)}), "s1", 10));
    let held = s.current().clone();

    let step = s.apply(delta(2, 3, vec![set("a", false)]));
    assert!(step.publish.is_none());
    assert_eq!(
        step.reply,
        Reply::Reconnect("delta from 2 does not follow held version 1".into())
    );
    assert_eq!(step.notes, []);
    assert!(Arc::ptr_eq(&held, s.current()));
    assert!(on(&s, "a"));
    // The connection after the reconnect carries on from the held version.
    applied(&s.apply(delta(1, 2, vec![set("a", false)])), 1, 2, &["a"]);
}

#[test]
fn a_restore_to_a_kept_version_swaps_its_snapshot_in() {
    let mut s = empty();
    let v1 = applied(
        &s.apply(snapshot(1, json!({"a": flag(true)}), "s1", 10)),
        0,
        1,
        &["a"],
    );
    let v2 = applied(&s.apply(delta(1, 2, vec![set("a", false)])), 1, 2, &["a"]);

    let step = s.apply(restore(2, 3, 1));
    let cur = applied(&step, 2, 3, &["a"]);
    assert_eq!(step.reply, ack(3));
    assert_eq!(
        step.notes,
        [
            Note::RevertFromKept {
                version: 3,
                restores: 1
            },
            Note::Applied { old: 2, version: 3 },
        ]
    );
    // The very snapshot of version 1: nothing recompiled.
    assert!(Arc::ptr_eq(&cur.snapshot, &v1.snapshot));
    assert!(Arc::ptr_eq(&cur.document, &v1.document));
    assert_eq!((cur.store.as_deref(), cur.at), (Some("s1"), Some(300)));
    assert!(on(&s, "a"));

    // A revert sent as a delta swaps a kept snapshot in too, ignoring the changes.
    let step = s.apply(revert_delta(3, 4, 2, vec![set("a", false)]));
    let cur = applied(&step, 3, 4, &["a"]);
    assert_eq!(
        step.notes,
        [
            Note::RevertFromKept {
                version: 4,
                restores: 2
            },
            Note::Applied { old: 3, version: 4 },
        ]
    );
    assert!(Arc::ptr_eq(&cur.snapshot, &v2.snapshot));
    assert!(!on(&s, "a"));
}

#[test]
fn a_restore_to_a_version_not_kept_reconnects() {
    let mut s = empty();
    s.apply(snapshot(1, json!({"a": flag(true)}), "s1", 10));
    for v in 2..=5 {
        s.apply(delta(v - 1, v, vec![set("a", v % 2 == 1)]));
    }
    // KEPT versions are kept (2 to 5): version 1 is gone.
    assert_eq!(KEPT, 4);
    let held = s.current().clone();
    let step = s.apply(restore(5, 6, 1));
    assert!(step.publish.is_none());
    assert_eq!(
        step.reply,
        Reply::Reconnect("revert to 1, which is not kept; resynchronizing".into())
    );
    assert_eq!(step.notes, []);
    assert!(Arc::ptr_eq(&held, s.current()));

    // A kept version, but the restore does not follow the held one: a gap.
    let step = s.apply(restore(4, 6, 2));
    assert!(step.publish.is_none());
    assert_eq!(
        step.reply,
        Reply::Reconnect("revert to 2, which is not kept; resynchronizing".into())
    );
    assert_eq!(s.current().version, 5);

    // Sent as a delta after reconnecting, the revert applies its changes.
    let step = s.apply(revert_delta(5, 6, 1, vec![set("a", true)]));
    let cur = applied(&step, 5, 6, &["a"]);
    assert_eq!(step.notes, [Note::Applied { old: 5, version: 6 }]);
    assert!(!Arc::ptr_eq(&cur.snapshot, &held.snapshot));
    assert!(on(&s, "a"));
}

/// More versions kept (`keep_versions`): a revert nine versions back is a swap, and the
/// kept versions share the flags they have in common.
#[test]
fn more_kept_versions_make_older_reverts_swaps() {
    let mut s = State::keeping(empty().current().clone(), 12);
    s.apply(snapshot(
        1,
        json!({"a": flag(true), "b": flag(true)}),
        "s1",
        10,
    ));
    let v1 = s.current().clone();
    for v in 2..=10 {
        s.apply(delta(v - 1, v, vec![set("a", v % 2 == 1)]));
    }
    let step = s.apply(restore(10, 11, 1));
    let cur = applied(&step, 10, 11, &["a"]);
    assert!(
        Arc::ptr_eq(&cur.snapshot, &v1.snapshot),
        "swapped in, not compiled"
    );
    assert_eq!(
        step.notes[0],
        Note::RevertFromKept {
            version: 11,
            restores: 1
        }
    );
    // Flag b never changed: one definition for all eleven versions.
    assert!(std::ptr::eq(
        cur.document.flag("b").unwrap(),
        v1.document.flag("b").unwrap()
    ));
}

#[test]
fn a_reset_snapshot_replaces_a_newer_version_and_drops_what_is_kept() {
    let mut s = at_v3();

    let step = s.apply(reset(2, json!({"z": flag(true)}), "s1", 20));
    let cur = applied(&step, 3, 2, &["z"]);
    assert_eq!(step.reply, ack(2));
    assert_eq!(
        step.notes,
        [
            Note::StoreChanged {
                held: 3,
                version: 2
            },
            Note::Applied { old: 3, version: 2 },
        ]
    );
    assert_eq!((cur.store.as_deref(), cur.at), (Some("s1"), Some(20)));
    assert!(on(&s, "z") && !on(&s, "a"));
    // Version 1 of the old history was kept; it is not reused for this one.
    let step = s.apply(restore(2, 3, 1));
    assert_eq!(
        step.reply,
        Reply::Reconnect("revert to 1, which is not kept; resynchronizing".into())
    );
}

#[test]
fn a_snapshot_from_another_store_replaces_an_older_or_newer_version() {
    let mut s = at_v3();

    let step = s.apply(snapshot(1, json!({"z": flag(true)}), "s2", 5));
    let cur = applied(&step, 3, 1, &["z"]);
    assert_eq!(step.reply, ack(1));
    assert_eq!(
        step.notes,
        [
            Note::StoreChanged {
                held: 3,
                version: 1
            },
            Note::Applied { old: 3, version: 1 },
        ]
    );
    assert_eq!((cur.store.as_deref(), cur.at), (Some("s2"), Some(5)));
    // From then on versions of the new store are compared as usual.
    assert_ignored(&s.apply(snapshot(1, json!({}), "s2", 5)));
    applied(&s.apply(delta(1, 2, vec![set("z", false)])), 1, 2, &["z"]);
}

#[test]
fn a_broken_flag_is_isolated_and_reported_in_the_ack() {
    let mut s = empty();
    let bad = json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "nope"});
    let step = s.apply(snapshot(1, json!({"a": flag(true), "bad": bad}), "s1", 10));
    applied(&step, 0, 1, &["a", "bad"]);
    let problems = s.current().snapshot.problems().to_vec();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "flags.bad.defaultVariant");
    assert!(problems[0].message.contains("\"nope\""), "{problems:?}");
    assert_eq!(
        step.reply,
        Reply::Send(ClientMsg::Ack {
            version: 1,
            problems
        })
    );
    assert_eq!(
        step.notes,
        [
            Note::Applied { old: 0, version: 1 },
            Note::BrokenFlags {
                version: 1,
                flags: 1
            },
        ]
    );
    let ctx = EvaluationContext::new("user-1");
    assert_eq!(
        s.current().snapshot.evaluate("bad", &ctx).reason,
        Reason::Error
    );
    assert!(on(&s, "a"));

    // Fixed by the next version: acked without problems.
    let step = s.apply(delta(1, 2, vec![set("bad", true)]));
    assert_eq!(step.reply, ack(2));
    assert_eq!(step.notes, [Note::Applied { old: 1, version: 2 }]);
}

#[test]
fn the_ack_reports_at_most_fifty_problems_each_clipped() {
    let mut s = empty();
    let mut flags = serde_json::Map::new();
    for i in 0..60 {
        let broken =
            json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "nope"});
        flags.insert(format!("bad{i:02}"), broken);
    }
    let long = "x".repeat(600);
    flags.insert(
        "long".into(),
        json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": long}),
    );
    let step = s.apply(snapshot(1, Value::Object(flags), "s1", 10));
    let all = s.current().snapshot.problems().to_vec();
    assert_eq!(all.len(), 61);
    let Reply::Send(ClientMsg::Ack { version, problems }) = &step.reply else {
        panic!("not an ack: {:?}", step.reply);
    };
    assert_eq!(*version, 1);
    assert_eq!(problems.len(), 51);
    assert_eq!(&problems[..50], &all[..50]);
    assert_eq!(
        problems[50],
        Problem {
            path: String::new(),
            message: "and 11 more flags that could not be loaded".into(),
        }
    );
    assert_eq!(
        step.notes[1],
        Note::BrokenFlags {
            version: 1,
            flags: 61
        }
    );

    // One problem too long for an ack: cut to 500 characters and marked.
    let mut s = empty();
    let lone =
        json!({"long": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": long}});
    let step = s.apply(snapshot(1, lone, "s1", 10));
    let full = &s.current().snapshot.problems()[0].message;
    assert!(full.chars().count() > 500);
    let Reply::Send(ClientMsg::Ack { problems, .. }) = &step.reply else {
        panic!("not an ack: {:?}", step.reply);
    };
    let clipped: String = full.chars().take(500).chain(['…']).collect();
    assert_eq!(problems[0].message, clipped);
    assert_eq!(problems[0].path, "flags.long.defaultVariant");
}

#[test]
fn duplicate_and_older_frames_are_ignored() {
    let mut s = at_v3();
    let held = s.current().clone();
    for frame in [
        snapshot(3, json!({"z": flag(true)}), "s1", 30),
        snapshot(2, json!({"z": flag(true)}), "s1", 20),
        delta(2, 3, vec![set("z", true)]),
        delta(1, 2, vec![set("z", true)]),
        restore(2, 3, 1),
        // A snapshot without a store is not told apart from the held one.
        ServerMsg::Snapshot {
            version: 3,
            document: json!({"flags": {}}),
            store: None,
            at: None,
            reset: false,
        },
        ServerMsg::Pong,
    ] {
        assert_ignored(&s.apply(frame));
        assert!(Arc::ptr_eq(&held, s.current()));
    }
    let step = s.apply(ServerMsg::Ping);
    assert!(step.publish.is_none());
    assert_eq!(step.reply, Reply::Send(ClientMsg::Pong));
    // What is kept is untouched by the ignored frames.
    applied(&s.apply(restore(3, 4, 1)), 3, 4, &["a", "b"]);
}

#[test]
fn a_flag_set_that_does_not_load_asks_for_a_snapshot() {
    let mut s = at_v3();
    let held = s.current().clone();

    let not_a_set = json!({"flags": 5});
    let reason = compile(&not_a_set, 4).unwrap_err();
    let step = s.apply(ServerMsg::Snapshot {
        version: 4,
        document: not_a_set,
        store: Some("s1".into()),
        at: None,
        reset: false,
    });
    assert!(step.publish.is_none());
    assert_eq!(
        step.reply,
        Reply::Send(ClientMsg::Resync {
            reason: reason.clone()
        })
    );
    assert_eq!(step.notes, [Note::Unloadable { reason }]);
    assert!(Arc::ptr_eq(&held, s.current()));

    let step = s.apply(delta(
        3,
        4,
        vec![change(ItemKind::Top, "flags", Some(json!(5)))],
    ));
    assert!(step.publish.is_none());
    assert!(matches!(step.reply, Reply::Send(ClientMsg::Resync { .. })));
    assert!(Arc::ptr_eq(&held, s.current()));
}

#[test]
fn an_unreadable_frame_asks_for_a_snapshot() {
    let step = Step::unreadable("expected value at line 1 column 1", 3);
    assert!(step.publish.is_none());
    assert_eq!(
        step.reply,
        Reply::Send(ClientMsg::Resync {
            reason: "unreadable message: expected value at line 1 column 1".into()
        })
    );
    assert_eq!(
        step.notes,
        [Note::Unreadable {
            error: "expected value at line 1 column 1".into(),
            bytes: 3
        }]
    );
    let Reply::Send(ClientMsg::Resync { reason }) = Step::unreadable(&"e".repeat(900), 1).reply
    else {
        panic!("not a resync");
    };
    assert_eq!(reason.chars().count(), 501);
    assert!(reason.ends_with('…'));
}

#[test]
fn the_hello_names_the_held_version_and_its_store() {
    let config = Config {
        stream_urls: vec!["ws://flagd/api/v1/stream".into()],
        sdk_key: "k".into(),
        connect_timeout: Duration::from_secs(1),
        cache_file: None,
        instance: "i-1".into(),
        host: "web-1".into(),
        labels: serde_json::Map::from_iter([("service".to_owned(), json!("checkout"))]),
        max_backoff: Duration::from_secs(1),
        heartbeat: Duration::from_secs(1),
        keep_versions: KEPT,
    };
    let hello = |version, store: Option<&str>, at| ClientMsg::Hello {
        instance: "i-1".into(),
        sdk: concat!("flagd-sdk-rust/", env!("CARGO_PKG_VERSION")).into(),
        host: "web-1".into(),
        labels: config.labels.clone(),
        version,
        store: store.map(str::to_owned),
        at,
    };
    let mut s = empty();
    assert_eq!(s.hello(&config), (hello(None, None, None), None));
    s.apply(snapshot(7, json!({}), "s1", 70));
    assert_eq!(
        s.hello(&config),
        (
            hello(Some(7), Some("s1"), Some(70)),
            Some(Status::Ready { version: 7 })
        )
    );
}

#[test]
fn a_lost_connection_makes_a_ready_client_stale() {
    let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
    let mut status = Status::Ready { version: 3 };
    assert!(disconnected(&mut status, 3, since));
    assert_eq!(status, Status::Stale { since, version: 3 });
    assert!(!disconnected(&mut status, 3, SystemTime::now()));
    assert_eq!(status, Status::Stale { since, version: 3 });
    let mut status = Status::Connecting { version: 0 };
    assert!(!disconnected(&mut status, 0, since));
    assert_eq!(status, Status::Connecting { version: 0 });
}

#[test]
fn reports_stay_under_flagds_message_limit() {
    let problems: Vec<Problem> = (0..10_000)
        .map(|i| Problem {
            path: format!("flags.{}", "k".repeat(256)),
            message: format!("{i}: {}", "x".repeat(10_000)),
        })
        .collect();
    let ack = ClientMsg::Ack {
        version: 1,
        problems: reported(&problems),
    };
    let text = serde_json::to_string(&ack).unwrap();
    assert!(text.len() < 64 * 1024, "{}", text.len());
    assert!(text.contains("and 9950 more flags"));
    assert_eq!(clip("short"), "short");
}

/// What one more kept version costs at 10,000 flags, counted by the allocator on this
/// test's thread (which therefore loads on its own, without the cores a large load
/// uses): a version made by a one-flag change shares every other flag's definition and
/// compiled form, the chunks of its lists and its indexes, so it costs the chunks the
/// change copied: a thousandth of the set, not a copy.
#[test]
fn a_kept_version_costs_what_changed_not_a_copy() {
    flagd_core::on_this_thread(a_kept_version_costs);
}

fn a_kept_version_costs() {
    let flags: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| {
            (
                format!("flag-{i:05}"),
                json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                       "targeting": {"fractional": [["on", 50], ["off", 50]]}}),
            )
        })
        .collect();
    let kept = 20;
    let (whole, mut s) = counting::measure(|| {
        let mut s = State::keeping(empty().current().clone(), kept);
        s.apply(snapshot(1, Value::Object(flags), "s1", 10));
        s
    });
    let (more, ()) = counting::measure(|| {
        for v in 2..=(kept as u64) {
            s.apply(delta(v - 1, v, vec![set("flag-00007", v % 2 == 1)]));
        }
    });
    let per_version = more / (kept as isize - 1);
    println!(
        "10,000 flags: the first version {} KiB, each further kept version {} KiB ({} bytes per flag)",
        whole / 1024,
        per_version / 1024,
        per_version / 10_000
    );
    assert!(
        per_version * 100 < whole,
        "a kept version costs {per_version} bytes, the whole set {whole}"
    );
    drop(s);
}

/// An allocator that counts the bytes live on the thread measuring (so that tests
/// running beside it on other threads are not counted).
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    struct Counting;

    fn count(delta: isize) {
        let _ = ON.try_with(|on| {
            if on.get() {
                let _ = LIVE.try_with(|l| l.set(l.get() + delta));
            }
        });
    }

    // SAFETY: every call is passed on to the system allocator unchanged; the counting
    // touches only const-initialized thread-locals, which never allocate.
    #[allow(unsafe_code)]
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count(isize::try_from(layout.size()).unwrap_or(0));
            // SAFETY: the caller's layout, as GlobalAlloc requires.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            count(-isize::try_from(layout.size()).unwrap_or(0));
            // SAFETY: allocated by System with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOC: Counting = Counting;

    /// Runs `f`, returning the bytes it left allocated and what it returned.
    pub(super) fn measure<T>(f: impl FnOnce() -> T) -> (isize, T) {
        LIVE.with(|l| l.set(0));
        ON.with(|o| o.set(true));
        let out = f();
        ON.with(|o| o.set(false));
        (LIVE.with(Cell::get), out)
    }
}
