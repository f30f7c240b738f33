//! 50 writers, 20 writes each, racing on one environment with `If-Match`.

use std::collections::BTreeMap;

use reqwest::Method;

use crate::support::{ADMIN, Backend, Server, rollout_flag};

const WRITERS: usize = 50;
const WRITES: usize = 20;

pub(crate) async fn fifty_writers(b: Backend) -> anyhow::Result<()> {
    let s = std::sync::Arc::new(Server::start(&b).await?);
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut conflicts = 0;
            for i in 0..WRITES {
                let head = s.get("/environments/staging").await.expect(200).body["version"]
                    .as_u64()
                    .unwrap_or(0);
                let r = s
                    .call(
                        Method::PUT,
                        &format!("/environments/staging/flags/w{w}"),
                        Some(ADMIN),
                        Some(rollout_flag(i as u64)),
                        &[("If-Match", &head.to_string())],
                    )
                    .await;
                match r.status.as_u16() {
                    200 | 201 => {
                        won.push((r.body["version"].as_u64().unwrap_or(0), format!("w{w}"), i));
                    }
                    409 => conflicts += 1,
                    other => panic!("writer {w}: unexpected {other}: {}", r.body),
                }
            }
            (won, conflicts)
        }));
    }
    let mut won = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let (w, c) = t.await?;
        won.extend(w);
        conflicts += c;
    }
    assert_eq!(
        won.len() + conflicts,
        WRITERS * WRITES,
        "every write either succeeds or gets a 409"
    );
    // Distinct, gapless versions: exactly 1..=N.
    let mut versions: Vec<u64> = won.iter().map(|w| w.0).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=won.len() as u64).collect::<Vec<_>>());
    let head = s.get("/environments/staging").await.expect(200).body["version"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(head, won.len() as u64);
    // The history holds every successful write and nothing else.
    let mut history = BTreeMap::new();
    let mut before = u64::MAX;
    loop {
        let page = s
            .get(&format!(
                "/environments/staging/versions?limit=1000&before={before}"
            ))
            .await
            .expect(200)
            .body;
        let vs = page["versions"].as_array().cloned().unwrap_or_default();
        for v in &vs {
            history.insert(
                v["version"].as_u64().unwrap_or(0),
                v["changedFlags"][0].as_str().unwrap_or_default().to_owned(),
            );
        }
        match page["next"].as_u64() {
            Some(n) => before = n,
            None => break,
        }
    }
    let expected: BTreeMap<u64, String> = won.iter().map(|(v, f, _)| (*v, f.clone())).collect();
    assert_eq!(history, expected);
    // Each successful write's content is what that version holds.
    for (v, flag, i) in won.iter().take(25) {
        let f = s
            .get(&format!("/environments/staging/flags/{flag}?version={v}"))
            .await
            .expect(200)
            .body;
        assert_eq!(f, rollout_flag(*i as u64), "version {v}");
    }
    // And the audit log has one entry per successful write.
    let audit = s
        .get("/audit?environment=staging&limit=1000")
        .await
        .expect(200)
        .body;
    let writes = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["action"] == "flag.create" || e["action"] == "flag.update")
        .count();
    assert_eq!(writes, won.len());
    assert!(!won.is_empty(), "some writes succeed");
    println!(
        "{}: {} writes won, {conflicts} refused with 409",
        b.name(),
        won.len()
    );
    match std::sync::Arc::try_unwrap(s) {
        Ok(s) => s.stop().await,
        Err(_) => Ok(()),
    }
}
