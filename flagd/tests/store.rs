//! The store below HTTP (`flagd::store::Store`), each test on a new SQLite file and on a
//! new database of a real PostgreSQL server (`flagd_harness::Postgres`, started once):
//! a write makes a version with its audit entry; a stale base is a conflict and writes
//! nothing; a revert restores an earlier version's content as a new version; every
//! version reads back; the commit listener hears each change once, in version order;
//! a reason is limited. A custom harness (`flagd_harness::run_trials`), as `tests/api`,
//! so that PostgreSQL starts once and is stopped at the end.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use flagd::store::{
    AuditEntry, AuditQuery, ChangeKind, CommitListener, Committed, Item, ItemKind, Items,
    MAX_REASON_CHARS, Store, StoreError, StoreOptions,
};
use flagd_core::Problem;
use flagd_core::wire::Change;
use flagd_harness::{Backend, BackendTest, SqliteFile};
use serde_json::{Value, json};

/// The environment every test writes (another one where a test says so).
const ENV: &str = "production";
/// Who makes the changes.
const ACTOR: &str = "alice";

/// What the listener heard of one commit: environment, version, changed, changed flags.
type Heard = (String, u64, bool, Vec<String>);

/// A [`CommitListener`] that records every commit it hears.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Heard>>);

impl CommitListener for Recorder {
    fn committed<'a>(&'a self, c: &'a Committed) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        self.0.lock().unwrap().push((
            c.environment.clone(),
            c.version,
            c.changed,
            c.changed_flags.clone(),
        ));
        Box::pin(async {})
    }
}

/// A new, migrated store with the environment [`ENV`] (version 0), announcing to a
/// [`Recorder`].
struct Fixture {
    store: Arc<Store>,
    listener: Arc<Recorder>,
    url: String,
    _sqlite: Option<SqliteFile>,
}

impl Fixture {
    async fn open(backend: &Backend) -> anyhow::Result<Self> {
        let (url, sqlite) = backend.database().await?;
        let listener = Arc::new(Recorder::default());
        let store = Store::connect_with(
            &url,
            StoreOptions {
                listener: Some(listener.clone()),
                ..StoreOptions::default()
            },
        )
        .await?;
        store.migrate().await?;
        store
            .create_environment(ACTOR, ENV, "Production", true)
            .await?;
        Ok(Self {
            store: Arc::new(store),
            listener,
            url,
            _sqlite: sqlite,
        })
    }

    /// One change of [`ENV`] at its head (see [`write`]).
    async fn write(&self, puts: &[(&str, Option<Value>)]) -> Result<Committed, StoreError> {
        write(&self.store, ENV, None, puts).await
    }

    /// One change of [`ENV`] based on version `base` (see [`write`]).
    async fn write_on(
        &self,
        base: u64,
        puts: &[(&str, Option<Value>)],
    ) -> Result<Committed, StoreError> {
        write(&self.store, ENV, Some(base), puts).await
    }

    /// The head's flag count and size in bytes as the store keeps them for its limits
    /// (read from its own row: no API returns them).
    async fn head_size(&self) -> anyhow::Result<(i64, i64)> {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::AnyConnection::connect(&self.url).await?;
        let row = sqlx::query("SELECT head_flags, head_bytes FROM environments WHERE key = $1")
            .bind(ENV)
            .fetch_one(&mut conn)
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Everything the listener heard so far, in order.
    fn heard(&self) -> Vec<Heard> {
        self.listener.0.lock().unwrap().clone()
    }

    /// The version numbers of [`ENV`] (of `flag` only, when given), newest first.
    async fn versions(&self, flag: Option<&str>) -> anyhow::Result<Vec<u64>> {
        let versions = self.store.versions(ENV, flag, None, 100).await?;
        Ok(versions.iter().map(|v| v.version).collect())
    }

    /// The newest `limit` entries of the audit log of [`ENV`], newest first.
    async fn audit_log(&self, limit: u32) -> anyhow::Result<Vec<AuditEntry>> {
        let query = AuditQuery {
            env: Some(ENV.into()),
            limit,
            ..AuditQuery::default()
        };
        Ok(self.store.audit_log(&query).await?)
    }

    /// The audit log of [`ENV`], newest first: action, target and version of each entry.
    async fn audit(&self) -> anyhow::Result<Vec<(String, String, Option<u64>)>> {
        let log = self.audit_log(100).await?;
        Ok(log
            .into_iter()
            .map(|e| (e.action, e.target, e.version))
            .collect())
    }
}

/// A flag whose default variant is `variant`.
fn flag(variant: &str) -> Value {
    json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": variant})
}

/// [`flag`], to set in a write.
fn set(variant: &str) -> Option<Value> {
    Some(flag(variant))
}

/// Flags as the store reads them: key, position, definition.
fn flags(list: &[(&str, i64, Value)]) -> Items {
    list.iter()
        .map(|(key, position, definition)| {
            let key = (*key).to_owned();
            let item = Item {
                kind: ItemKind::Flag,
                key: key.clone(),
                position: *position,
                definition: definition.clone(),
            };
            ((ItemKind::Flag, key), item)
        })
        .collect()
}

fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|k| (*k).to_owned()).collect()
}

/// One change of `env` based on `base` (the head when `None`): each flag set to its
/// definition (`None` deletes it), committed by [`ACTOR`] as an update, without a reason.
async fn write(
    store: &Store,
    env: &str,
    base: Option<u64>,
    puts: &[(&str, Option<Value>)],
) -> Result<Committed, StoreError> {
    let mut tx = store.begin_write(env, base).await?;
    for (key, definition) in puts {
        tx.put(ItemKind::Flag, key, definition.clone(), None)
            .await?;
    }
    let target = match puts {
        [(key, _)] => key,
        _ => env,
    };
    tx.commit(ChangeKind::Update, ACTOR, None, "flag.update", target, None)
        .await
}

/// A commit through `begin_write`, `put` and `commit` makes version 1, its record and
/// its audit entry, and is heard once.
async fn a_write_makes_a_version_with_its_audit_entry(b: Backend) -> anyhow::Result<()> {
    let f = Fixture::open(&b).await?;
    assert_eq!(f.store.environment(ENV).await?.version, 0);
    let mut tx = f.store.begin_write(ENV, None).await?;
    assert_eq!(tx.base_version(), 0);
    tx.put(ItemKind::Flag, "checkout", Some(flag("on")), None)
        .await?;
    let c = tx
        .commit(
            ChangeKind::Create,
            ACTOR,
            Some("launch"),
            "flag.create",
            "checkout",
            None,
        )
        .await?;
    assert_eq!(
        (c.environment.as_str(), c.version, c.changed, c.restores),
        (ENV, 1, true, None)
    );
    assert_eq!(c.changed_flags, keys(&["checkout"]));
    assert_eq!(
        (c.kind, c.author.as_str(), c.reason.as_deref()),
        (ChangeKind::Create, ACTOR, Some("launch"))
    );
    assert_eq!(
        c.changes,
        Some(vec![Change {
            kind: ItemKind::Flag,
            key: "checkout".into(),
            definition: Some(flag("on")),
        }])
    );

    assert_eq!(f.store.environment(ENV).await?.version, 1);
    assert_eq!(
        f.store.items(ENV, None).await?,
        (1, flags(&[("checkout", 1, flag("on"))]))
    );
    let v = f.store.version(ENV, 1).await?;
    assert_eq!(
        (v.version, v.kind.as_str(), v.author.as_str()),
        (1, "create", ACTOR)
    );
    assert_eq!(
        (v.reason.as_deref(), v.changed_flags, v.reverted_to),
        (Some("launch"), keys(&["checkout"]), None)
    );
    assert_eq!(f.versions(None).await?, [1]);

    let log = f.audit_log(100).await?;
    assert_eq!(log.len(), 2, "{log:?}");
    let e = &log[0];
    assert_eq!(
        (e.action.as_str(), e.actor.as_str(), e.target.as_str()),
        ("flag.create", ACTOR, "checkout")
    );
    assert_eq!(
        (e.environment.as_deref(), e.reason.as_deref(), e.version),
        (Some(ENV), Some("launch"), Some(1))
    );
    assert_eq!((&e.before, &e.after), (&None, &Some(flag("on"))));
    assert_eq!(
        (
            log[1].action.as_str(),
            log[1].target.as_str(),
            log[1].version
        ),
        ("environment.create", ENV, None)
    );

    assert_eq!(f.heard(), [(ENV.into(), 1, true, keys(&["checkout"]))]);
    Ok(())
}

/// A write based on a version that is not the head (`If-Match`) is refused with
/// `Conflict`, naming the head, and writes nothing; based on the head, it goes through.
async fn a_stale_base_is_a_conflict_and_writes_nothing(b: Backend) -> anyhow::Result<()> {
    let f = Fixture::open(&b).await?;
    let c = f.write_on(0, &[("a", set("on"))]).await?;
    assert_eq!(c.version, 1);
    let c = f.write_on(1, &[("a", set("off"))]).await?;
    assert_eq!(c.version, 2);
    let audit = f.audit().await?;

    for stale in [1, 0, 3] {
        match f.store.begin_write(ENV, Some(stale)).await {
            Err(StoreError::Conflict {
                message,
                current_version,
            }) => {
                assert_eq!(
                    message,
                    format!(
                        "the change is based on version {stale}, but \"production\" is at version 2"
                    )
                );
                assert_eq!(current_version, Some(2));
            }
            other => panic!("based on version {stale}: {other:?}"),
        }
    }
    // Nothing was written.
    assert_eq!(f.store.environment(ENV).await?.version, 2);
    assert_eq!(f.versions(None).await?, [2, 1]);
    assert_eq!(f.audit().await?, audit);
    assert_eq!(
        f.store.items(ENV, None).await?,
        (2, flags(&[("a", 1, flag("off"))]))
    );
    assert_eq!(
        f.heard(),
        [
            (ENV.into(), 1, true, keys(&["a"])),
            (ENV.into(), 2, true, keys(&["a"])),
        ]
    );

    let c = f.write_on(2, &[("a", set("on"))]).await?;
    assert_eq!((c.version, c.changed), (3, true));
    assert_eq!(f.versions(None).await?, [3, 2, 1]);
    Ok(())
}

/// `revert_to(1)` makes version 3 with version 1's content (positions included), records
/// what it restored, and audits each item before and after; a version that does not
/// exist is `NotFound`.
async fn a_revert_restores_an_earlier_version_as_a_new_version(b: Backend) -> anyhow::Result<()> {
    let f = Fixture::open(&b).await?;
    f.write(&[("a", set("on"))]).await?;
    let c = f.write(&[("a", set("off")), ("b", set("on"))]).await?;
    assert_eq!((c.version, c.changed_flags), (2, keys(&["a", "b"])));
    let (_, at_1) = f.store.items(ENV, Some(1)).await?;
    assert_eq!(at_1, flags(&[("a", 1, flag("on"))]));

    let mut tx = f.store.begin_write(ENV, Some(2)).await?;
    tx.revert_to(1).await?;
    let c = tx
        .commit(
            ChangeKind::Revert,
            ACTOR,
            Some("bad release"),
            "flagset.revert",
            ENV,
            Some(1),
        )
        .await?;
    assert_eq!(
        (c.version, c.changed, c.restores, c.kind),
        (3, true, Some(1), ChangeKind::Revert)
    );
    assert_eq!(c.changed_flags, keys(&["a", "b"]));
    assert_eq!(
        c.changes,
        Some(vec![
            Change {
                kind: ItemKind::Flag,
                key: "a".into(),
                definition: Some(flag("on")),
            },
            Change {
                kind: ItemKind::Flag,
                key: "b".into(),
                definition: None,
            },
        ])
    );
    assert_eq!(f.store.items(ENV, None).await?, (3, at_1));
    assert_eq!(
        f.store.items(ENV, Some(2)).await?,
        (2, flags(&[("a", 1, flag("off")), ("b", 2, flag("on"))])),
        "the reverted version stays readable"
    );
    let v = f.store.version(ENV, 3).await?;
    assert_eq!(
        (v.kind.as_str(), v.reason.as_deref(), v.reverted_to),
        ("revert", Some("bad release"), Some(1))
    );
    assert_eq!(v.changed_flags, keys(&["a", "b"]));
    let log = f.audit_log(1).await?;
    let e = &log[0];
    assert_eq!(
        (e.action.as_str(), e.target.as_str(), e.version),
        ("flagset.revert", ENV, Some(3))
    );
    assert_eq!(
        e.before,
        Some(json!({"flag:a": flag("off"), "flag:b": flag("on")}))
    );
    assert_eq!(e.after, Some(json!({"flag:a": flag("on"), "flag:b": null})));

    let mut tx = f.store.begin_write(ENV, None).await?;
    match tx.revert_to(9).await {
        Err(StoreError::NotFound(message)) => assert_eq!(
            message,
            "environment \"production\" has no version 9 (head is 3)"
        ),
        other => panic!("revert to 9: {other:?}"),
    }
    drop(tx);
    assert_eq!(f.versions(None).await?, [3, 2, 1]);
    Ok(())
}

/// `items(env, Some(v))` reads every version as it was, 0 (empty) to the head, inside a
/// write too (`at`); a version after the head is `NotFound`; a write dropped before its
/// commit leaves nothing.
async fn every_version_reads_back(b: Backend) -> anyhow::Result<()> {
    let f = Fixture::open(&b).await?;
    f.write(&[("a", set("on"))]).await?;
    f.write(&[("a", set("off"))]).await?;
    f.write(&[("b", set("on"))]).await?;
    f.write(&[("a", None)]).await?;

    let expected = [
        flags(&[]),
        flags(&[("a", 1, flag("on"))]),
        flags(&[("a", 1, flag("off"))]),
        flags(&[("a", 1, flag("off")), ("b", 2, flag("on"))]),
        flags(&[("b", 2, flag("on"))]),
    ];
    for (v, items) in (0u64..).zip(&expected) {
        assert_eq!(
            f.store.items(ENV, Some(v)).await?,
            (v, items.clone()),
            "version {v}"
        );
    }
    assert_eq!(f.store.items(ENV, None).await?, (4, expected[4].clone()));
    match f.store.items(ENV, Some(5)).await {
        Err(StoreError::NotFound(message)) => assert_eq!(
            message,
            "environment \"production\" has no version 5 (head is 4)"
        ),
        other => panic!("version 5: {other:?}"),
    }
    assert_eq!(f.versions(None).await?, [4, 3, 2, 1]);
    assert_eq!(f.versions(Some("a")).await?, [4, 2, 1]);

    // Inside a write: the same versions; dropped uncommitted, it writes nothing.
    let mut tx = f.store.begin_write(ENV, Some(4)).await?;
    assert_eq!(tx.at(2).await?, expected[2]);
    assert_eq!(tx.head().await?, expected[4]);
    tx.put(ItemKind::Flag, "c", Some(flag("on")), None).await?;
    drop(tx);
    assert_eq!(f.store.items(ENV, None).await?, (4, expected[4].clone()));
    assert_eq!(f.heard().len(), 4);
    Ok(())
}

/// The content of every version as a model holds it: (kind, key) → definition.
type Content = std::collections::BTreeMap<(ItemKind, String), Value>;

/// A long mixed history (one-item writes, many-item imports through `apply`, deletes,
/// evaluators, and reverts to any earlier version, reverts of reverts included) checked
/// against a model: each commit changes what the model says and reports those flags,
/// a write or revert that changes nothing makes no version, and at the end every
/// version reads back as the model holds it, and each flag's history lists the
/// versions that changed it.
async fn every_version_reads_back_through_reverts_of_reverts(b: Backend) -> anyhow::Result<()> {
    let f = Fixture::open(&b).await?;
    let mut history: Vec<Content> = vec![Content::new()];
    // xorshift: the same history every run.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let definition = |pick: u64| {
        let state = if pick & 1 == 0 { "ENABLED" } else { "DISABLED" };
        let variant = if pick & 2 == 0 { "on" } else { "off" };
        json!({"state": state, "variants": {"on": true, "off": false}, "defaultVariant": variant})
    };
    for step in 0..120 {
        let head = history.last().cloned().unwrap_or_default();
        let op = next(20);
        let mut tx = f.store.begin_write(ENV, None).await?;
        let (wanted, restores) = if op < 6 {
            // Revert to any version, the head and version 0 included.
            let n = next(history.len() as u64);
            tx.revert_to(n).await?;
            (history[n as usize].clone(), Some(n))
        } else if op < 9 {
            // An import: several items at once, some deleted.
            let mut content = head.clone();
            let mut batch = Vec::new();
            for _ in 0..1 + next(5) {
                let key = format!("k{}", next(8));
                let value = (next(5) != 0).then(|| definition(next(4)));
                match &value {
                    Some(v) => content.insert((ItemKind::Flag, key.clone()), v.clone()),
                    None => content.remove(&(ItemKind::Flag, key.clone())),
                };
                batch.retain(
                    |(_, k, _, _): &(ItemKind, String, Option<Value>, Option<i64>)| *k != key,
                );
                batch.push((ItemKind::Flag, key, value, None));
            }
            let items = tx.head().await?;
            tx.apply(&items, batch).await?;
            (content, None)
        } else {
            let kind = if op == 9 {
                ItemKind::Evaluator
            } else {
                ItemKind::Flag
            };
            let key = format!("k{}", next(8));
            let value = (next(4) != 0).then(|| definition(next(4)));
            tx.put(kind, &key, value.clone(), None).await?;
            let mut content = head.clone();
            match value {
                Some(v) => content.insert((kind, key), v),
                None => content.remove(&(kind, key)),
            };
            (content, None)
        };
        let c = tx
            .commit(
                ChangeKind::Update,
                ACTOR,
                None,
                "flagset.import",
                ENV,
                restores,
            )
            .await?;
        let mut changed: Vec<String> = head
            .keys()
            .chain(wanted.keys())
            .filter(|k| k.0 == ItemKind::Flag && head.get(*k) != wanted.get(*k))
            .map(|k| k.1.clone())
            .collect();
        changed.sort();
        changed.dedup();
        assert_eq!(c.changed, wanted != head, "step {step}: whether it changed");
        assert_eq!(c.changed_flags, changed, "step {step}: the changed flags");
        if c.changed {
            history.push(wanted);
            assert_eq!(c.version, history.len() as u64 - 1, "step {step}");
        }
        let (_, now) = f.store.items(ENV, None).await?;
        let now: Content = now.into_iter().map(|(k, i)| (k, i.definition)).collect();
        assert_eq!(&now, history.last().unwrap(), "step {step}: the head");
    }
    for (v, content) in (0u64..).zip(&history) {
        let (_, items) = f.store.items(ENV, Some(v)).await?;
        let read: Content = items.into_iter().map(|(k, i)| (k, i.definition)).collect();
        assert_eq!(&read, content, "version {v}");
    }
    for k in 0..8 {
        let key = format!("k{k}");
        let id = (ItemKind::Flag, key.clone());
        let mut expected: Vec<u64> = (1..history.len())
            .filter(|&v| history[v].get(&id) != history[v - 1].get(&id))
            .map(|v| v as u64)
            .rev()
            .collect();
        expected.truncate(100);
        assert_eq!(
            f.versions(Some(&key)).await?,
            expected,
            "the history of {key}"
        );
    }
    assert!(history.len() > 40, "{} versions", history.len());
    Ok(())
}

/// A revert that changes more items than are carried to the SDKs one by one (over 200)
/// is found and recorded in the store alone: the changed flags (deleted, added and
/// rewritten ones), every flag's history, and the head's size for the limits, which
/// must equal what the store counted when that content was first written.
async fn a_large_revert_lists_what_it_changed_and_keeps_the_size(b: Backend) -> anyhow::Result<()> {
    let f = Fixture::open(&b).await?;
    let import = |content: &[(String, Value)]| {
        let store = f.store.clone();
        let content = content.to_vec();
        async move {
            let mut tx = store.begin_write(ENV, None).await?;
            let head = tx.head().await?;
            let mut batch: Vec<(ItemKind, String, Option<Value>, Option<i64>)> = head
                .keys()
                .filter(|k| !content.iter().any(|(c, _)| *c == k.1))
                .map(|k| (k.0, k.1.clone(), None, None))
                .collect();
            batch.extend(
                content
                    .into_iter()
                    .map(|(k, v)| (ItemKind::Flag, k, Some(v), None)),
            );
            tx.apply(&head, batch).await?;
            Ok::<_, anyhow::Error>(
                tx.commit(ChangeKind::Update, ACTOR, None, "flagset.import", ENV, None)
                    .await?,
            )
        }
    };
    // v1: f000..f299; v2: f000..f049 kept, f050..f269 rewritten, f270..f299 deleted,
    // g000..g029 added.
    let one: Vec<(String, Value)> = (0..300).map(|i| (format!("f{i:03}"), flag("on"))).collect();
    let mut two: Vec<(String, Value)> = (0..50).map(|i| (format!("f{i:03}"), flag("on"))).collect();
    two.extend((50..270).map(|i| (format!("f{i:03}"), flag("off"))));
    two.extend((0..30).map(|i| {
        (
            format!("g{i:03}"),
            json!({"state": "ENABLED", "variants": {"a": "x"}, "defaultVariant": "a"}),
        )
    }));
    import(&one).await?;
    let size_one = f.head_size().await?;
    import(&two).await?;
    let size_two = f.head_size().await?;
    assert_eq!(size_one.0, 300);
    assert_eq!(size_two.0, 300);
    let mut changed: Vec<String> = (50..300).map(|i| format!("f{i:03}")).collect();
    changed.extend((0..30).map(|i| format!("g{i:03}")));
    changed.sort();
    for (to, size) in [(1, size_one), (2, size_two), (1, size_one)] {
        let mut tx = f.store.begin_write(ENV, None).await?;
        tx.revert_to(to).await?;
        let c = tx
            .commit(
                ChangeKind::Revert,
                ACTOR,
                None,
                "flagset.revert",
                ENV,
                Some(to),
            )
            .await?;
        assert_eq!(c.changed_flags, changed, "the revert to v{to}");
        assert!(
            c.changes.is_none(),
            "{} changes are carried as keys",
            changed.len()
        );
        assert_eq!(
            f.head_size().await?,
            size,
            "the head's size after the revert to v{to}"
        );
        let (_, now) = f.store.items(ENV, None).await?;
        let (_, then) = f.store.items(ENV, Some(to)).await?;
        assert_eq!(now, then, "the head is v{to}'s content");
    }
    // Each changed flag's history lists the two imports and the three reverts; a kept
    // one lists its first import alone.
    assert_eq!(f.versions(Some("f100")).await?, vec![5, 4, 3, 2, 1]);
    assert_eq!(f.versions(Some("g007")).await?, vec![5, 4, 3, 2]);
    assert_eq!(f.versions(Some("f010")).await?, vec![1]);
    Ok(())
}

/// Replaces [`ENV`]'s flags with `n` flags serving `variant`, in one change.
async fn import(store: &Store, n: usize, variant: &str) -> anyhow::Result<Committed> {
    let mut tx = store.begin_write(ENV, None).await?;
    let head = tx.head().await?;
    let batch = (0..n)
        .map(|i| {
            (
                ItemKind::Flag,
                format!("f{i:05}"),
                Some(flag(variant)),
                None,
            )
        })
        .collect();
    tx.apply(&head, batch).await?;
    Ok(tx
        .commit(ChangeKind::Update, ACTOR, None, "flagset.import", ENV, None)
        .await?)
}

/// PostgreSQL plans from statistics that autovacuum refreshes about once a minute, so an
/// environment just imported is, to the planner, a few rows: a revert right after a
/// large import (a bad release rolled back) was planned as a sort spilled to disk.
/// After a write that inserts many rows, the store refreshes the statistics itself (in
/// the background): `ANALYZE` runs, as `pg_stat_user_tables.analyze_count` counts
/// (autovacuum's own runs are counted apart), and the planner then knows the
/// environment's rows. SQLite plans without statistics, and gets none.
async fn a_large_write_refreshes_the_planner_statistics(b: Backend) -> anyhow::Result<()> {
    use sqlx::{Connection, Row};
    let f = Fixture::open(&b).await?;
    let mut conn = sqlx::AnyConnection::connect(&f.url).await?;
    let analyzed = async |conn: &mut sqlx::AnyConnection| -> anyhow::Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(analyze_count AS BIGINT) FROM pg_stat_user_tables WHERE relname = 'revisions'",
        )
        .fetch_one(conn)
        .await?;
        Ok(row.try_get(0)?)
    };
    assert_eq!(analyzed(&mut conn).await?, 0, "before any write");
    import(&f.store, 1_200, "on").await?;
    // The refresh runs after the commit: wait for it (a stuck one fails here).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while analyzed(&mut conn).await? < 1 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no ANALYZE of revisions after an import of 1,200 flags"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // What the planner now expects of the environment's rows.
    let row = sqlx::query(
        "SELECT CAST(most_common_vals AS TEXT) FROM pg_stats WHERE tablename = 'revisions' AND attname = 'env'",
    )
    .fetch_one(&mut conn)
    .await?;
    let common: String = row.try_get(0)?;
    assert!(
        common.contains(ENV),
        "the statistics know the environment's rows: {common}"
    );
    Ok(())
}

/// The `CommitListener` of `StoreOptions::listener` hears every commit that changed
/// something exactly once, in version order per environment, concurrent writers
/// included. A commit that changes nothing answers `changed == false` on the head
/// version, makes no version, and is not announced: the store returns before it
/// announces (`WriteTx::commit`).
async fn the_listener_hears_each_commit_once_in_version_order(b: Backend) -> anyhow::Result<()> {
    let f = Fixture::open(&b).await?;
    f.write(&[("a", set("on"))]).await?;
    // The same definition again, then nothing at all: no change.
    let same = f.write(&[("a", set("on"))]).await?;
    let nothing = f.write(&[]).await?;
    for c in [&same, &nothing] {
        assert_eq!(
            (c.environment.as_str(), c.version, c.changed),
            (ENV, 1, false)
        );
        assert_eq!(c.changed_flags, Vec::<String>::new());
        assert_eq!(c.changes, Some(Vec::new()));
    }
    assert_eq!(f.versions(None).await?, [1]);
    f.write(&[("a", set("off"))]).await?;
    f.store
        .create_environment(ACTOR, "staging", "Staging", false)
        .await?;
    write(&f.store, "staging", None, &[("s", set("on"))]).await?;
    assert_eq!(
        f.heard(),
        [
            (ENV.into(), 1, true, keys(&["a"])),
            (ENV.into(), 2, true, keys(&["a"])),
            ("staging".into(), 1, true, keys(&["s"])),
        ]
    );

    // Eight writers at once: versions 3 to 10, each heard once, in order.
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let store = f.store.clone();
            tokio::spawn(async move {
                let key = format!("c{i}");
                write(&store, ENV, None, &[(&key, set("on"))]).await
            })
        })
        .collect();
    let mut made = Vec::new();
    for w in writers {
        let c = w.await??;
        made.push((c.version, c.changed_flags));
    }
    made.sort();
    let heard: Vec<(u64, Vec<String>)> = f.heard()[3..]
        .iter()
        .map(|(env, version, changed, flags)| {
            assert_eq!((env.as_str(), *changed), (ENV, true));
            (*version, flags.clone())
        })
        .collect();
    assert_eq!(heard, made, "heard in version order, once each");
    assert_eq!(
        heard.iter().map(|h| h.0).collect::<Vec<_>>(),
        (3..=10).collect::<Vec<_>>()
    );
    let mut written: Vec<String> = heard.into_iter().flat_map(|h| h.1).collect();
    written.sort();
    assert_eq!(written, (0..8).map(|i| format!("c{i}")).collect::<Vec<_>>());
    Ok(())
}

/// A reason longer than `MAX_REASON_CHARS` characters is `Invalid` (path `reason`) and
/// nothing is written; one of exactly that many characters (two bytes each) is kept.
async fn a_reason_over_the_limit_is_invalid(b: Backend) -> anyhow::Result<()> {
    let f = Fixture::open(&b).await?;
    let audit = f.audit().await?;
    let too_long = "é".repeat(MAX_REASON_CHARS + 1);
    let mut tx = f.store.begin_write(ENV, None).await?;
    tx.put(ItemKind::Flag, "a", Some(flag("on")), None).await?;
    match tx
        .commit(
            ChangeKind::Create,
            ACTOR,
            Some(&too_long),
            "flag.create",
            "a",
            None,
        )
        .await
    {
        Err(StoreError::Invalid { message, details }) => {
            let says = "is 1001 characters long; at most 1000";
            assert_eq!(message, format!("reason: {says}"));
            assert_eq!(
                details,
                [Problem {
                    path: "reason".into(),
                    message: says.into(),
                }]
            );
        }
        other => panic!("a reason of {} characters: {other:?}", MAX_REASON_CHARS + 1),
    }
    assert_eq!(f.store.items(ENV, None).await?, (0, Items::new()));
    assert_eq!(f.versions(None).await?, Vec::<u64>::new());
    assert_eq!(f.audit().await?, audit);
    assert_eq!(f.heard(), []);

    let longest = "é".repeat(MAX_REASON_CHARS);
    let mut tx = f.store.begin_write(ENV, None).await?;
    tx.put(ItemKind::Flag, "a", Some(flag("on")), None).await?;
    let c = tx
        .commit(
            ChangeKind::Create,
            ACTOR,
            Some(&longest),
            "flag.create",
            "a",
            None,
        )
        .await?;
    assert_eq!(c.version, 1);
    assert_eq!(f.store.version(ENV, 1).await?.reason, Some(longest.clone()));
    let log = f.audit_log(1).await?;
    assert_eq!(log[0].reason, Some(longest));
    Ok(())
}

/// A Slack channel named `name` asking for `events`.
fn slack_channel(name: &str, events: &[&str]) -> flagd::store::ChannelFields {
    flagd::store::ChannelFields {
        name: Some(name.to_owned()),
        kind: Some("slack".into()),
        url: Some("https://hooks.example.com/services/x".into()),
        secret: None,
        events: Some(events.iter().map(|e| (*e).to_owned()).collect()),
        converge_timeout: Some(std::time::Duration::from_secs(30)),
    }
}

/// `Notifier::refused` (what the Alertmanager receiver calls): one durable message for
/// each channel of the environment sent `refused`, none for the others.
async fn refused_actions_are_queued_for_subscribed_channels(b: Backend) -> anyhow::Result<()> {
    let f = Fixture::open(&b).await?;
    let channel = |events: &[&str]| slack_channel(&format!("c-{}", events.join("-")), events);
    let wants = f
        .store
        .create_channel(ACTOR, "c1", ENV, &channel(&["refused", "kill-switch"]))
        .await?;
    f.store
        .create_channel(ACTOR, "c2", ENV, &channel(&["kill-switch"]))
        .await?;
    let hub = Arc::new(flagd::hub::Hub::new(
        f.store.clone(),
        Arc::new(flagd::metrics::Metrics::new()),
        std::time::Duration::from_secs(15),
        std::time::Duration::from_secs(600),
    ));
    let notifier =
        flagd::notify::Notifier::new(f.store.clone(), hub, flagd::notify::Options::default())?;
    let n = notifier
        .announce(
            "refused",
            ENV,
            "auto-revert of production refused",
            "the last known-good version is older than the limit",
            Some("https://alerts.example.com/a/1"),
        )
        .await?;
    assert_eq!(n, 1);
    let d = f.store.deliveries(ENV, &wants.id, None, 10).await?;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].event, "refused");
    assert_eq!(d[0].status, "pending");
    assert_eq!(
        d[0].payload["title"],
        "[production] Automatic action refused: auto-revert of production refused"
    );
    assert_eq!(d[0].payload["link"], "https://alerts.example.com/a/1");
    assert!(f.store.deliveries(ENV, "c2", None, 10).await?.is_empty());
    Ok(())
}

/// Two replicas reading the outbox at once: one claims the message and fails to send
/// it (a retry is due later); the other, from its earlier read, may not claim it (before,
/// it could: it sent at once past the backoff, then could not record its attempt under
/// the number taken, and the message stayed pending to be sent again).
async fn a_message_attempted_since_it_was_read_is_not_claimed(b: Backend) -> anyhow::Result<()> {
    use flagd::store::AttemptOutcome;
    let f = Fixture::open(&b).await?;
    let fields = slack_channel("c", &["refused"]);
    f.store.create_channel(ACTOR, "c1", ENV, &fields).await?;
    let mut n = 0;
    let queued = f
        .store
        .enqueue(ENV, "refused", &json!({"title": "t"}), || {
            n += 1;
            Ok(format!("m{n}"))
        })
        .await?;
    assert_eq!(queued, 1);
    let lease = flagd::store::now_ms() + 60_000;
    let early = f.store.next_messages().await?;
    let fresh = f.store.next_messages().await?;
    assert_eq!((early.len(), fresh.len()), (1, 1));
    assert!(f.store.claim_message(&fresh[0], lease).await?);
    let retry_at = flagd::store::now_ms() + 60_000;
    f.store
        .record_attempt(
            &fresh[0],
            &AttemptOutcome {
                ok: false,
                status: Some(503),
                body: None,
                error: Some("the receiver answered 503".into()),
                retry_at: Some(retry_at),
            },
        )
        .await?;
    assert!(
        !f.store.claim_message(&early[0], lease).await?,
        "claimed from a read older than its last attempt"
    );
    // Read again, it is the retry, due later.
    let again = f.store.next_messages().await?;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].attempts, again[0].next_attempt_at), (1, retry_at));
    Ok(())
}

/// Two replicas turning the same versions into messages: the first moves the channel's
/// cursor and queues its message; the second, moving from the same cursor, is refused
/// and queues nothing (each version is announced once).
async fn a_channel_moves_past_a_version_once(b: Backend) -> anyhow::Result<()> {
    use flagd::store::{ChannelFields, NewMessage};
    let f = Fixture::open(&b).await?;
    let fields = ChannelFields {
        name: Some("c".into()),
        kind: Some("slack".into()),
        url: Some("https://hooks.example.com/services/x".into()),
        secret: None,
        events: Some(vec!["kill-switch".into()]),
        converge_timeout: Some(std::time::Duration::from_secs(30)),
    };
    let c = f.store.create_channel(ACTOR, "c1", ENV, &fields).await?;
    let from = f
        .store
        .channel_target(&c.id)
        .await?
        .map(|t| t.notified_version)
        .unwrap_or_default();
    let message = |id: &str| NewMessage {
        id: id.to_owned(),
        event: "kill-switch".into(),
        payload: json!({"title": id}),
        watch: None,
    };
    assert!(
        f.store
            .advance_channel(&c.id, from, from + 1, &[message("first")])
            .await?
    );
    assert!(
        !f.store
            .advance_channel(&c.id, from, from + 1, &[message("second")])
            .await?
    );
    let d = f.store.deliveries(ENV, &c.id, None, 10).await?;
    let ids: Vec<&str> = d.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["first"]);
    Ok(())
}

/// The notifier skips its reads on each commit while this says idle: only with no
/// channel and nothing in the outbox to send or watch.
async fn notifications_are_idle_only_without_channels_or_messages(
    b: Backend,
) -> anyhow::Result<()> {
    let f = Fixture::open(&b).await?;
    assert!(f.store.notifications_idle().await?, "a new store");
    f.write(&[("a", Some(json!({"state": "ENABLED"})))]).await?;
    assert!(f.store.notifications_idle().await?, "versions alone");
    f.store
        .create_channel(ACTOR, "c1", ENV, &slack_channel("c", &["refused"]))
        .await?;
    assert!(!f.store.notifications_idle().await?, "a channel");
    let mut n = 0;
    f.store
        .enqueue(ENV, "refused", &json!({"title": "t"}), || {
            n += 1;
            Ok(format!("m{n}"))
        })
        .await?;
    // Deleting the channel fails its pending message: nothing is left to send.
    f.store.delete_channel(ACTOR, ENV, "c1").await?;
    assert!(f.store.notifications_idle().await?, "a deleted channel");
    Ok(())
}

/// An idle notifier skips the commits it hears, but its poll still runs however fast
/// they come: a channel made through another replica (no wake-up here) is found, and
/// the change after it announced.
async fn an_idle_notifier_still_polls_through_a_stream_of_commits(
    b: Backend,
) -> anyhow::Result<()> {
    let f = Fixture::open(&b).await?;
    let hub = Arc::new(flagd::hub::Hub::new(
        f.store.clone(),
        Arc::new(flagd::metrics::Metrics::new()),
        std::time::Duration::from_secs(15),
        std::time::Duration::from_secs(600),
    ));
    let notifier = Arc::new(flagd::notify::Notifier::new(
        f.store.clone(),
        hub,
        flagd::notify::Options {
            poll_interval: std::time::Duration::from_millis(200),
            ..flagd::notify::Options::default()
        },
    )?);
    let first = Arc::new(f.write(&[("a", Some(json!({"state": "ENABLED"})))]).await?);
    let (bus, heard) = tokio::sync::broadcast::channel(16);
    let running = tokio::spawn(notifier.run(heard));
    // Commits heard every 20 ms, ten times as often as the poll.
    let stream = tokio::spawn(async move {
        loop {
            let _ = bus.send(first.clone());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    // Past the notifier's first look, which finds the store idle: only then are the
    // commits it hears skipped, the case this test is about. (Nothing is asserted on
    // time; were the look late, the test would pass without exercising that case.)
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    f.store
        .create_channel(ACTOR, "c1", ENV, &slack_channel("c", &["change"]))
        .await?;
    f.write(&[("a", Some(json!({"state": "DISABLED"})))])
        .await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The change's message (its follow-up, `applied`, may be queued with it).
    let mut change = None;
    while change.is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        change = f
            .store
            .deliveries(ENV, "c1", None, 10)
            .await?
            .into_iter()
            .find(|m| m.event == "change");
    }
    stream.abort();
    running.abort();
    let change = change.expect("the change after the channel was made is announced");
    assert_eq!(change.payload["toVersion"], 2, "{change:?}");
    Ok(())
}

const TESTS: &[(&str, BackendTest)] = &[
    ("a_channel_moves_past_a_version_once", |b| {
        Box::pin(a_channel_moves_past_a_version_once(b))
    }),
    (
        "a_message_attempted_since_it_was_read_is_not_claimed",
        |b| Box::pin(a_message_attempted_since_it_was_read_is_not_claimed(b)),
    ),
    ("refused_actions_are_queued_for_subscribed_channels", |b| {
        Box::pin(refused_actions_are_queued_for_subscribed_channels(b))
    }),
    ("a_write_makes_a_version_with_its_audit_entry", |b| {
        Box::pin(a_write_makes_a_version_with_its_audit_entry(b))
    }),
    ("a_stale_base_is_a_conflict_and_writes_nothing", |b| {
        Box::pin(a_stale_base_is_a_conflict_and_writes_nothing(b))
    }),
    (
        "a_revert_restores_an_earlier_version_as_a_new_version",
        |b| Box::pin(a_revert_restores_an_earlier_version_as_a_new_version(b)),
    ),
    ("every_version_reads_back", |b| {
        Box::pin(every_version_reads_back(b))
    }),
    (
        "a_large_revert_lists_what_it_changed_and_keeps_the_size",
        |b| Box::pin(a_large_revert_lists_what_it_changed_and_keeps_the_size(b)),
    ),
    ("every_version_reads_back_through_reverts_of_reverts", |b| {
        Box::pin(every_version_reads_back_through_reverts_of_reverts(b))
    }),
    (
        "the_listener_hears_each_commit_once_in_version_order",
        |b| Box::pin(the_listener_hears_each_commit_once_in_version_order(b)),
    ),
    ("a_reason_over_the_limit_is_invalid", |b| {
        Box::pin(a_reason_over_the_limit_is_invalid(b))
    }),
    (
        "notifications_are_idle_only_without_channels_or_messages",
        |b| Box::pin(notifications_are_idle_only_without_channels_or_messages(b)),
    ),
    (
        "an_idle_notifier_still_polls_through_a_stream_of_commits",
        |b| Box::pin(an_idle_notifier_still_polls_through_a_stream_of_commits(b)),
    ),
];

/// On PostgreSQL alone (what they test does not exist on SQLite).
const POSTGRES_ONLY: &[(&str, BackendTest)] =
    &[("a_large_write_refreshes_the_planner_statistics", |b| {
        Box::pin(a_large_write_refreshes_the_planner_statistics(b))
    })];

fn main() {
    flagd_harness::run_trials(TESTS, &[], POSTGRES_ONLY)
}
