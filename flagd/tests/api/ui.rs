//! What the admin UI needs from the server: its files with the security headers, cookie
//! sessions with CSRF protection, the live event stream, flag summaries and previews.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{ADMIN, Backend, Resp, Server, rollout_flag, sdk_key};

const P: &str = "/environments/production";

/// The session cookie's `name=value` from a sign-in answer.
fn session_cookie(r: &Resp) -> String {
    let set = r
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    set.split(';').next().unwrap_or_default().to_owned()
}

async fn sign_in(s: &Server, token: &str) -> (String, String) {
    let r = s
        .call(
            Method::POST,
            "/session",
            None,
            Some(json!({"token": token})),
            &[],
        )
        .await
        .expect(200);
    (
        session_cookie(&r),
        r.body["csrfToken"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Creates or replaces the flag `from-ui` with the session cookie and these headers.
async fn put_from_ui(s: &Server, cookie: &str, headers: &[(&str, &str)]) -> Resp {
    let mut h = vec![("cookie", cookie)];
    h.extend_from_slice(headers);
    s.call(
        Method::PUT,
        &format!("{P}/flags/from-ui"),
        None,
        Some(rollout_flag(5)),
        &h,
    )
    .await
}

pub(crate) async fn files_and_headers(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let root = s.base.trim_end_matches("/api/v1").to_owned();
    let http = reqwest::Client::new();
    let page = http.get(format!("{root}/")).send().await?;
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    assert!(
        h["content-type"].to_str()?.starts_with("text/html"),
        "{h:?}"
    );
    let csp = h["content-security-policy"].to_str()?;
    for part in [
        "script-src 'self'",
        "frame-ancestors 'none'",
        "default-src 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = page.text().await?;
    assert!(html.contains("/ui/"), "the page loads its files from /ui/");
    // Revalidated by content hash.
    let etag = h["etag"].to_str()?.to_owned();
    let again = http
        .get(format!("{root}/"))
        .header("if-none-match", &etag)
        .send()
        .await?;
    assert_eq!(again.status(), 304);
    let same = http.get(format!("{root}/ui/index.html")).send().await?;
    assert_eq!(same.status(), 200);
    assert_eq!(
        http.get(format!("{root}/ui/no-such-file.js"))
            .send()
            .await?
            .status(),
        404
    );
    // The API carries the headers too.
    let api = s.get("/environments").await.expect(200);
    assert!(api.headers.contains_key("content-security-policy"));
    s.stop().await
}

pub(crate) async fn sessions_and_csrf(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let editor = s.token("ann", "editor", None).await;
    let viewer = s.token("vic", "viewer", None).await;
    let sdk = sdk_key(&s, "production").await;
    let session = |token: Value| async {
        s.call(Method::POST, "/session", None, Some(token), &[])
            .await
    };
    let bad = session(json!({"token": "fd_nope"})).await.expect(401);
    assert_eq!(bad.body["error"]["code"], "unauthorized");
    session(json!({"token": sdk})).await.expect(403);
    let missing = session(json!({})).await.expect(422);
    assert_eq!(missing.body["error"]["details"][0]["path"], "token");

    let r = session(json!({"token": editor})).await.expect(200);
    let set = r.headers["set-cookie"].to_str()?.to_owned();
    for attr in ["flagd_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert_eq!(
        (r.body["name"].clone(), r.body["role"].clone()),
        (json!("ann"), json!("editor"))
    );
    assert_eq!(r.body["can"]["editFlags"], true);
    assert_eq!(r.body["can"]["admin"], false);
    let cookie = session_cookie(&r);
    let csrf = r.body["csrfToken"].as_str().unwrap_or_default().to_owned();
    assert!(csrf.len() >= 40, "a random CSRF token: {csrf}");

    // After a reload the page asks who is signed in and gets the CSRF token again.
    let who = s
        .call(Method::GET, "/session", None, None, &[("cookie", &cookie)])
        .await
        .expect(200);
    assert_eq!(who.body["name"], "ann");
    assert_eq!(who.body["csrfToken"], csrf.as_str());
    // Reads need the cookie only.
    s.call(
        Method::GET,
        "/environments",
        None,
        None,
        &[("cookie", &cookie)],
    )
    .await
    .expect(200);

    // A change needs the CSRF token: missing or wrong is 403 `csrf`, and nothing changes.
    let refused = put_from_ui(&s, &cookie, &[]).await.expect(403);
    assert_eq!(refused.body["error"]["code"], "csrf");
    let wrong = "x".repeat(csrf.len());
    put_from_ui(&s, &cookie, &[("x-csrf-token", &wrong)])
        .await
        .expect(403);
    s.get(&format!("{P}/flags/from-ui")).await.expect(404);
    put_from_ui(
        &s,
        &cookie,
        &[
            ("x-csrf-token", &csrf),
            ("x-change-reason", "UTF-8''ramp%20f%C3%B8r%20Oslo"),
        ],
    )
    .await
    .expect(201);
    let v = s.get(&format!("{P}/versions")).await.expect(200).body;
    assert_eq!(
        v["versions"][0]["author"], "ann",
        "the session's token is the author"
    );
    assert_eq!(v["versions"][0]["reason"], "ramp før Oslo");

    // A viewer's session may read, and is refused changes by its role.
    let (vcookie, vcsrf) = sign_in(&s, &viewer).await;
    let r = s
        .call(
            Method::POST,
            &format!("{P}/flags/from-ui/disable"),
            None,
            Some(json!({"reason": "try"})),
            &[("cookie", &vcookie), ("x-csrf-token", &vcsrf)],
        )
        .await
        .expect(403);
    assert_eq!(r.body["error"]["code"], "forbidden");

    // Sign-out needs the CSRF token, ends the session and clears the cookie.
    s.call(
        Method::DELETE,
        "/session",
        None,
        None,
        &[("cookie", &cookie)],
    )
    .await
    .expect(403);
    let out = s
        .call(
            Method::DELETE,
            "/session",
            None,
            None,
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        )
        .await
        .expect(204);
    assert!(out.headers["set-cookie"].to_str()?.contains("Max-Age=0"));
    s.call(Method::GET, "/session", None, None, &[("cookie", &cookie)])
        .await
        .expect(401);

    // Revoking a token ends its sessions.
    let (cookie2, _) = sign_in(&s, &editor).await;
    let ann = s.get("/tokens").await.expect(200).body["tokens"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "ann").cloned())
        .unwrap_or(Value::Null);
    s.call(
        Method::DELETE,
        &format!("/tokens/{}", ann["id"].as_str().unwrap_or_default()),
        Some(ADMIN),
        None,
        &[],
    )
    .await
    .expect(204);
    s.call(Method::GET, "/session", None, None, &[("cookie", &cookie2)])
        .await
        .expect(401);

    // Sign-in and sign-out are in the audit log.
    let audit = s
        .get("/audit?action=session.&actor=ann")
        .await
        .expect(200)
        .body;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["session.create", "session.delete", "session.create"]
    );
    s.stop().await
}

/// Reads server-sent events until one named `name` arrives; returns its data.
async fn next_event(
    resp: &mut reqwest::Response,
    buf: &mut String,
    name: &str,
) -> anyhow::Result<Value> {
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if event == name {
                return Ok(serde_json::from_str(&data)?);
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the event stream ended"))?;
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

pub(crate) async fn live_events(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let staging_only = s.token("stage-watcher", "viewer", Some(&["staging"])).await;
    let (cookie, _) = sign_in(&s, &staging_only).await;
    let http = reqwest::Client::new();
    let mut all = http
        .get(format!("{}/events", s.base))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    assert_eq!(all.status(), 200);
    assert!(
        all.headers()["content-type"]
            .to_str()?
            .starts_with("text/event-stream")
    );
    let mut limited = http
        .get(format!("{}/events", s.base))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(limited.status(), 200);

    s.put(&format!("{P}/flags/a"), rollout_flag(5))
        .await
        .expect(201);
    s.post(
        &format!("{P}/flags/a/disable"),
        json!({"reason": "incident 42"}),
    )
    .await
    .expect(200);
    s.put("/environments/staging/flags/b", rollout_flag(5))
        .await
        .expect(201);

    let mut buf = String::new();
    let first = next_event(&mut all, &mut buf, "change").await?;
    assert_eq!(
        (
            first["environment"].clone(),
            first["version"].clone(),
            first["kind"].clone()
        ),
        (json!("production"), json!(1), json!("create"))
    );
    let second = next_event(&mut all, &mut buf, "change").await?;
    assert_eq!(second["kind"], "toggle");
    assert_eq!(second["author"], "admin");
    assert_eq!(second["reason"], "incident 42");
    assert_eq!(second["changedFlags"], json!(["a"]));
    // A token limited to staging hears only staging.
    let mut lbuf = String::new();
    let seen = next_event(&mut limited, &mut lbuf, "change").await?;
    assert_eq!(
        (seen["environment"].clone(), seen["changedFlags"].clone()),
        (json!("staging"), json!(["b"]))
    );
    s.post("/environments", json!({"key": "qa"}))
        .await
        .expect(201);
    next_event(&mut all, &mut buf, "environments").await?;
    drop((all, limited));
    s.stop().await
}

pub(crate) async fn summaries_and_preview(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    s.put(
        &format!("{P}/flags"),
        json!({
            "$evaluators": {"nordic": {"in": [{"var": "country"}, ["NO", "SE", "DK"]]}},
            "flags": {"a": rollout_flag(5), "b": rollout_flag(50)}
        }),
    )
    .await
    .expect(200);
    s.post(&format!("{P}/flags/b/disable"), json!({"reason": "slow"}))
        .await
        .expect(200);
    let sum = s.get(&format!("{P}/flag-summaries")).await.expect(200).body;
    assert_eq!(sum["version"], 2);
    let keys: Vec<&str> = sum["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["key"].as_str())
        .collect();
    assert_eq!(keys, ["a", "b"], "in document order");
    assert_eq!(sum["flags"][0]["lastChange"]["kind"], "import");
    assert_eq!(sum["flags"][0]["definition"], rollout_flag(5));
    let b_last = &sum["flags"][1]["lastChange"];
    assert_eq!(
        (
            b_last["version"].clone(),
            b_last["kind"].clone(),
            b_last["author"].clone(),
            b_last["reason"].clone()
        ),
        (json!(2), json!("toggle"), json!("admin"), json!("slow"))
    );

    // An unsaved definition, evaluated with the environment's shared evaluators.
    let flag = json!({"state": "ENABLED", "variants": {"new": "new", "old": "old"}, "defaultVariant": "old",
        "targeting": {"if": [{"$ref": "nordic"}, "new", "old"]}});
    let r = s
        .post(
            &format!("{P}/preview"),
            json!({"key": "checkout", "flag": flag, "contexts": [
                {"targetingKey": "u1", "country": "NO"}, {"targetingKey": "u2", "country": "US"}, {}]}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["version"], 2);
    let got: Vec<(Value, Value)> = r.body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| (x["variant"].clone(), x["reason"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!("new"), json!("TARGETING_MATCH")),
            (json!("old"), json!("TARGETING_MATCH")),
            (json!("old"), json!("TARGETING_MATCH"))
        ]
    );
    s.get(&format!("{P}/flags/checkout")).await.expect(404);

    // Problems come back at their paths.
    let bad = s
        .post(
            &format!("{P}/preview"),
            json!({"key": "checkout", "flag": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "onn"}, "contexts": [{}]}),
        )
        .await
        .expect(422);
    assert_eq!(
        bad.body["error"]["details"][0]["path"],
        "flags.checkout.defaultVariant"
    );
    let bad = s
        .post(
            &format!("{P}/preview"),
            json!({"key": "checkout", "flag": flag, "contexts": [5]}),
        )
        .await
        .expect(422);
    assert_eq!(bad.body["error"]["details"][0]["path"], "contexts[0]");
    let bad = s
        .post(
            &format!("{P}/preview"),
            json!({"key": "checkout", "flag": flag}),
        )
        .await
        .expect(422);
    assert_eq!(bad.body["error"]["details"][0]["path"], "contexts");
    s.stop().await
}
