//! Scheduled changes: applied once at their time in the name of whoever scheduled them,
//! against the version they were scheduled on (failing visibly, with a message to the
//! environment's channels, when what they were based on moved), across a restart, and
//! cancelled; bad ones refused with the path of what is wrong.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Server, error_paths, rollout_flag};

const P: &str = "/environments/production";

fn options() -> flagd::server::Options {
    let mut o = flagd::server::Options {
        plan_interval: Duration::from_millis(100),
        ..Default::default()
    };
    o.notify.allow_private_addresses = true;
    o.notify.poll_interval = Duration::from_millis(100);
    o
}

async fn schedule(s: &Server, body: Value) -> String {
    s.post(&format!("{P}/schedules"), body)
        .await
        .expect(201)
        .body["schedule"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The scheduled change once it is no longer pending (within 20 s).
async fn ended(s: &Server, id: &str) -> Value {
    for _ in 0..200 {
        let r = s.get(&format!("{P}/schedules/{id}")).await.expect(200).body;
        if r["schedule"]["state"] != "pending" {
            return r["schedule"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("scheduled change {id} still pending");
}

/// A rollout step scheduled a second ahead, then a kill switch: applied once each, by
/// whoever scheduled them, with their reasons; then a scheduled revert.
pub(crate) async fn apply_at_their_time(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(&b, options()).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(0))
        .await
        .expect(201);
    let ramp = schedule(
        &s,
        json!({"in": "1s", "action": "rollout", "flag": "checkout", "variant": "on", "percent": 25,
               "reason": "morning ramp"}),
    )
    .await;
    let r = s
        .get(&format!("{P}/schedules/{ramp}"))
        .await
        .expect(200)
        .body;
    assert_eq!(r["schedule"]["state"], "pending", "{r}");
    assert_eq!(r["schedule"]["basedOn"], 1);
    assert_eq!(r["schedule"]["flagVersion"], 1);
    let done = ended(&s, &ramp).await;
    assert_eq!(done["state"], "applied", "{done}");
    // Scheduled on the flag as the ramp left it (a kill switch scheduled before the
    // ramp would fail: the flag moved under it).
    let kill = schedule(
        &s,
        json!({"in": "500ms", "action": "disable", "flag": "checkout", "reason": "end of the campaign"}),
    )
    .await;
    let done = ended(&s, &kill).await;
    assert_eq!(done["state"], "applied", "{done}");
    let flag = s.get(&format!("{P}/flags/checkout")).await.expect(200).body;
    assert_eq!(flag["state"], "DISABLED");
    assert_eq!(flag["targeting"]["fractional"][0][1], 25);
    let v = done["version"].as_u64().unwrap();
    let v = s.get(&format!("{P}/versions/{v}")).await.expect(200).body;
    assert_eq!(v["version"]["kind"], "toggle", "{v}");
    assert_eq!(
        v["version"]["author"], "admin",
        "in the name of who scheduled it"
    );
    assert_eq!(
        v["version"]["reason"],
        format!("scheduled change {kill}: end of the campaign")
    );
    assert_eq!(s.version_numbers(&format!("{P}/versions")).await, [3, 2, 1]);

    let back = schedule(
        &s,
        json!({"in": "500ms", "action": "revert", "version": 1, "reason": "as it was"}),
    )
    .await;
    let done = ended(&s, &back).await;
    assert_eq!(done["state"], "applied", "{done}");
    assert_eq!(
        s.get(&format!("{P}/flags/checkout")).await.body,
        rollout_flag(0)
    );
    let pending = s
        .get(&format!("{P}/schedules?pending=true"))
        .await
        .expect(200)
        .body;
    assert_eq!(pending["schedules"], json!([]));
    let audit = s
        .get("/audit?action=schedule.created")
        .await
        .expect(200)
        .body;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 3, "{audit}");
    s.stop().await
}

/// A scheduled change whose flag (or environment) moved since fails, says why, writes
/// nothing, and is announced on the channels.
pub(crate) async fn fail_visibly_when_moved(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(&b, options()).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(0))
        .await
        .expect(201);
    s.put(&format!("{P}/flags/other"), rollout_flag(0))
        .await
        .expect(201);
    let down = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let channel = s
        .post(
            &format!("{P}/channels"),
            json!({"kind": "slack", "url": format!("http://127.0.0.1:{down}/hook")}),
        )
        .await
        .expect(201)
        .body["channel"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ramp = schedule(
        &s,
        json!({"in": "2s", "action": "rollout", "flag": "checkout", "variant": "on", "percent": 50}),
    )
    .await;
    let import = schedule(
        &s,
        json!({"in": "2s", "action": "import", "document": {"flags": {"checkout": rollout_flag(10)}}}),
    )
    .await;
    // Another flag changed: the rollout of checkout still applies; the import, based on
    // the whole environment, does not.
    s.post(
        &format!("{P}/flags/other/rollout"),
        json!({"variant": "on", "percent": 5}),
    )
    .await
    .expect(200);
    let done = ended(&s, &ramp).await;
    assert_eq!(done["state"], "applied", "{done}");
    let done = ended(&s, &import).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["detail"].as_str().unwrap().contains("scheduled on v2"),
        "{done}"
    );
    // The flag itself moved: the kill switch scheduled before fails.
    let kill = schedule(
        &s,
        json!({"in": "1s", "action": "disable", "flag": "checkout", "reason": "campaign over"}),
    )
    .await;
    s.post(
        &format!("{P}/flags/checkout/rollout"),
        json!({"variant": "on", "percent": 60}),
    )
    .await
    .expect(200);
    let head = s.get(P).await.body["version"].clone();
    let done = ended(&s, &kill).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["detail"].as_str().unwrap().contains("changed since"),
        "{done}"
    );
    assert_eq!(s.get(P).await.body["version"], head, "nothing was written");
    let deliveries = s
        .get(&format!("{P}/channels/{channel}/deliveries"))
        .await
        .expect(200)
        .body;
    let failed: Vec<&Value> = deliveries["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["event"] == "plan")
        .collect();
    assert_eq!(failed.len(), 2, "{deliveries}");
    assert!(
        failed[0]["payload"]["title"]
            .as_str()
            .unwrap()
            .contains("failed"),
        "{deliveries}"
    );
    s.stop().await
}

/// A change due while flagd was down is applied once when it is back; a cancelled one
/// never is.
pub(crate) async fn survive_a_restart_and_cancel(b: Backend) -> anyhow::Result<()> {
    let (url, _file) = b.database().await?;
    let s = Server::start_on(&url, options()).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(0))
        .await
        .expect(201);
    let ramp = schedule(
        &s,
        json!({"in": "1s", "action": "rollout", "flag": "checkout", "variant": "on", "percent": 30}),
    )
    .await;
    let never = schedule(
        &s,
        json!({"in": "1s", "action": "disable", "flag": "checkout", "reason": "later"}),
    )
    .await;
    let r = s
        .post(
            &format!("{P}/schedules/{never}/cancel"),
            json!({"reason": "not needed"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["schedule"]["state"], "cancelled", "{}", r.body);
    s.post(&format!("{P}/schedules/{never}/cancel"), json!({}))
        .await
        .expect(409);
    s.stop().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = Server::start_on(&url, options()).await?;
    let done = ended(&s, &ramp).await;
    assert_eq!(done["state"], "applied", "{done}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.version_numbers(&format!("{P}/versions")).await, [2, 1]);
    let flag = s.get(&format!("{P}/flags/checkout")).await.expect(200).body;
    assert_eq!(
        flag["state"], "ENABLED",
        "the cancelled kill switch never applied"
    );
    assert_eq!(flag["targeting"]["fractional"][0][1], 30);
    s.stop().await
}

/// Bad schedules are refused (422 at the path of what is wrong, 404 for what does not
/// exist, 403 for a role that may not make the change itself); nothing is written.
pub(crate) async fn bad_schedules_are_refused(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(&b, options()).await?;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(0))
        .await
        .expect(201);
    let path = format!("{P}/schedules");
    for (body, at) in [
        (
            json!({"action": "rollout", "flag": "checkout", "variant": "on", "percent": 5}),
            "at",
        ),
        (
            json!({"at": "2030-01-01T00:00:00Z", "in": "1m", "action": "enable", "flag": "checkout", "reason": "x"}),
            "at",
        ),
        (
            json!({"at": "tomorrow", "action": "enable", "flag": "checkout", "reason": "x"}),
            "at",
        ),
        (
            json!({"in": "soon", "action": "enable", "flag": "checkout", "reason": "x"}),
            "in",
        ),
        (
            json!({"at": "2999-01-01T00:00:00Z", "action": "enable", "flag": "checkout", "reason": "x"}),
            "at",
        ),
        (
            json!({"in": "1m", "action": "explode", "flag": "checkout"}),
            "action",
        ),
        (
            json!({"in": "1m", "action": "disable", "flag": "checkout"}),
            "reason",
        ),
        (
            json!({"in": "1m", "action": "enable", "reason": "x"}),
            "flag",
        ),
        (
            json!({"in": "1m", "action": "rollout", "flag": "checkout", "variant": "blue", "percent": 5}),
            "variant",
        ),
        (
            json!({"in": "1m", "action": "rollout", "flag": "checkout", "variant": "on"}),
            "percent",
        ),
        (
            json!({"in": "1m", "action": "revert", "reason": "x"}),
            "version",
        ),
        (
            json!({"in": "1m", "action": "import", "document": {"flags": {"a": {"state": "ON"}}}}),
            "flags.a.state",
        ),
    ] {
        let r = s.post(&path, body.clone()).await.expect(422);
        let paths = error_paths(&r.body);
        assert!(
            paths.iter().any(|p| p.starts_with(at)),
            "{body} -> {}",
            r.body
        );
    }
    s.post(
        &path,
        json!({"in": "1m", "action": "enable", "flag": "nope", "reason": "x"}),
    )
    .await
    .expect(404);
    s.post(
        &path,
        json!({"in": "1m", "action": "revert", "version": 9, "reason": "x"}),
    )
    .await
    .expect(404);
    let ci = s.token("ci", "ci", None).await;
    let r = s
        .call(
            Method::POST,
            &path,
            Some(&ci),
            Some(json!({"in": "1m", "action": "disable", "flag": "checkout", "reason": "x"})),
            &[],
        )
        .await;
    assert_eq!(
        r.status, 403,
        "ci may not flip the kill switch, now or later: {}",
        r.body
    );
    let r = s
        .call(
            Method::POST,
            &path,
            Some(&ci),
            Some(json!({"in": "1m", "action": "rollout", "flag": "checkout", "variant": "on", "percent": 5})),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let all = s.get(&path).await.expect(200).body;
    assert_eq!(all["schedules"].as_array().unwrap().len(), 1, "{all}");
    assert_eq!(s.get(P).await.body["version"], 1, "nothing was written");
    s.stop().await
}
