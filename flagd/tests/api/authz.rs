//! Every route × every role × environment limits, with the exact status expected.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Server, rollout_flag};

/// Who may call a route, written out here independently of the server's matrix.
const READ: &[&str] = &["viewer", "editor", "responder", "ci", "admin"];
const EDIT: &[&str] = &["editor", "admin"];
const KILL: &[&str] = &["editor", "responder", "admin"];
const ROLLOUT: &[&str] = &["editor", "responder", "ci", "admin"];
const REVERT: &[&str] = &["editor", "responder", "ci", "admin"];
const IMPORT: &[&str] = &["editor", "ci", "admin"];
const ADMIN_ONLY: &[&str] = &["admin"];
const NOBODY: &[&str] = &[];
const ALERTS: &[&str] = &["responder", "admin", "alertmanager"];

struct Route {
    method: Method,
    /// `{E}` is the target environment, `{K}` a flag made for this case, `{N}` a fresh
    /// name, `{T}` a token id made for this case.
    path: &'static str,
    body: Option<fn() -> Value>,
    allowed: &'static [&'static str],
    /// Whether the route acts on the environment `{E}` (so environment limits apply).
    scoped: bool,
    /// Whether it reaches beyond any environment list (a new environment; a token, or
    /// the victim token `{T}`, that is not limited): refused to every limited token.
    unlimited: bool,
    ok: u16,
}

fn routes() -> Vec<Route> {
    let r = |method: Method,
             path: &'static str,
             body: Option<fn() -> Value>,
             allowed: &'static [&'static str],
             scoped: bool,
             ok: u16| Route {
        unlimited: matches!(
            (&method, path),
            (&Method::POST, "/environments" | "/tokens" | "/users")
                | (&Method::DELETE, "/tokens/{T}")
        ),
        method,
        path,
        body,
        allowed,
        scoped,
        ok,
    };
    vec![
        r(Method::GET, "/environments", None, READ, false, 200),
        r(
            Method::POST,
            "/environments",
            Some(|| json!({"key": "{N}"})),
            ADMIN_ONLY,
            false,
            201,
        ),
        r(Method::GET, "/environments/{E}", None, READ, true, 200),
        r(
            Method::DELETE,
            "/environments/{E}?force=true",
            None,
            ADMIN_ONLY,
            true,
            204,
        ),
        r(
            Method::GET,
            "/environments/{E}/flags",
            None,
            READ,
            true,
            200,
        ),
        r(
            Method::PUT,
            "/environments/{E}/flags",
            Some(|| json!({"flags": {"imported": rollout_flag(3)}})),
            IMPORT,
            true,
            200,
        ),
        r(
            Method::GET,
            "/environments/{E}/flags/{K}",
            None,
            READ,
            true,
            200,
        ),
        r(
            Method::PUT,
            "/environments/{E}/flags/{K}",
            Some(|| rollout_flag(7)),
            EDIT,
            true,
            200,
        ),
        r(
            Method::DELETE,
            "/environments/{E}/flags/{K}",
            None,
            EDIT,
            true,
            200,
        ),
        r(
            Method::POST,
            "/environments/{E}/flags/{K}/disable",
            Some(|| json!({"reason": "test"})),
            KILL,
            true,
            200,
        ),
        r(
            Method::POST,
            "/environments/{E}/flags/{K}/enable",
            Some(|| json!({"reason": "test"})),
            KILL,
            true,
            200,
        ),
        r(
            Method::POST,
            "/environments/{E}/flags/{K}/rollout",
            Some(|| json!({"variant": "on", "percent": 50})),
            ROLLOUT,
            true,
            200,
        ),
        r(
            Method::POST,
            "/environments/{E}/flags/{K}/restore",
            Some(|| json!({"version": 0, "reason": "test"})),
            REVERT,
            true,
            200,
        ),
        r(
            Method::GET,
            "/environments/{E}/versions",
            None,
            READ,
            true,
            200,
        ),
        r(
            Method::GET,
            "/environments/{E}/versions/1",
            None,
            READ,
            true,
            200,
        ),
        r(
            Method::GET,
            "/environments/{E}/diff?from=0",
            None,
            READ,
            true,
            200,
        ),
        r(
            Method::POST,
            "/environments/{E}/revert",
            Some(|| json!({"version": 0, "reason": "test", "empty": true})),
            REVERT,
            true,
            200,
        ),
        r(
            Method::POST,
            "/environments/{E}/sdk-keys",
            None,
            ADMIN_ONLY,
            true,
            201,
        ),
        r(
            Method::POST,
            "/validate",
            Some(|| json!({"flags": {}})),
            READ,
            false,
            200,
        ),
        r(
            Method::GET,
            "/environments/{E}/flag-summaries",
            None,
            READ,
            true,
            200,
        ),
        r(
            Method::POST,
            "/environments/{E}/preview",
            Some(
                || json!({"key": "{K}", "flag": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}, "contexts": [{}]}),
            ),
            READ,
            true,
            200,
        ),
        r(Method::GET, "/audit", None, READ, false, 200),
        r(Method::GET, "/audit?environment={E}", None, READ, true, 200),
        r(Method::GET, "/tokens", None, ADMIN_ONLY, false, 200),
        r(
            Method::POST,
            "/tokens",
            Some(|| json!({"name": "{N}", "role": "viewer"})),
            ADMIN_ONLY,
            false,
            201,
        ),
        r(Method::DELETE, "/tokens/{T}", None, ADMIN_ONLY, false, 204),
        r(Method::GET, "/users", None, ADMIN_ONLY, false, 200),
        r(
            Method::GET,
            "/environments/{E}/approval-policy",
            None,
            READ,
            true,
            200,
        ),
        r(
            Method::PUT,
            "/environments/{E}/approval-policy",
            Some(|| json!({"protected": false, "approvals": 1})),
            ADMIN_ONLY,
            true,
            200,
        ),
        r(
            Method::GET,
            "/environments/{E}/change-requests",
            None,
            READ,
            true,
            200,
        ),
        r(
            Method::POST,
            "/environments/{E}/change-requests",
            Some(
                || json!({"title": "t", "change": {"flags": {"{K}": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}}}),
            ),
            EDIT,
            true,
            201,
        ),
        // Approvals come from people: no token approves, whatever its role.
        r(
            Method::POST,
            "/environments/{E}/change-requests/none/approve",
            Some(|| json!({})),
            NOBODY,
            true,
            200,
        ),
        r(
            Method::GET,
            "/environments/{E}/reviews",
            None,
            READ,
            true,
            200,
        ),
        r(
            Method::POST,
            "/environments/{E}/reviews/1/acknowledge",
            Some(|| json!({})),
            NOBODY,
            true,
            200,
        ),
        r(
            Method::POST,
            "/users",
            Some(|| json!({"login": "{N}", "role": "viewer"})),
            ADMIN_ONLY,
            false,
            201,
        ),
        r(
            Method::POST,
            "/alertmanager",
            Some(
                || json!({"version": "4", "groupKey": "{}:{alertname=\"x\"}", "status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": "x", "flagd_environment": "{E}", "flagd_flag": "{K}"}, "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "{N}"}]}),
            ),
            ALERTS,
            true,
            200,
        ),
        r(
            Method::GET,
            "/environments/{E}/alert-policy",
            None,
            READ,
            true,
            200,
        ),
        r(
            Method::PUT,
            "/environments/{E}/alert-policy",
            Some(|| json!({"actions": ["disable", "revert"]})),
            ADMIN_ONLY,
            true,
            200,
        ),
        r(
            Method::GET,
            "/environments/{E}/alerts",
            None,
            READ,
            true,
            200,
        ),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Limit {
    None,
    ToTarget,
    ToOther,
}

pub(crate) async fn matrix(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let mut n = 0usize;
    let mut failures = Vec::new();
    for route in routes() {
        for role in [
            "viewer",
            "editor",
            "responder",
            "ci",
            "admin",
            "sdk",
            "alertmanager",
        ] {
            for limit in [Limit::None, Limit::ToTarget, Limit::ToOther] {
                if role == "sdk" && matches!(limit, Limit::None) {
                    continue; // an SDK key always names one environment
                }
                n += 1;
                // A fresh environment per case, so that every call can succeed.
                let env = format!("e{n}");
                s.post("/environments", json!({"key": env}))
                    .await
                    .expect(201);
                s.put(&format!("/environments/{env}/flags/k{n}"), rollout_flag(5))
                    .await
                    .expect(201);
                let token_id = s
                    .post(
                        "/tokens",
                        json!({"name": format!("victim{n}"), "role": "viewer"}),
                    )
                    .await
                    .expect(201)
                    .body["token"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let envs = match limit {
                    Limit::None => None,
                    Limit::ToTarget => Some(vec![env.clone()]),
                    Limit::ToOther => Some(vec!["development".to_owned()]),
                };
                let secret = if role == "sdk" {
                    let e = envs
                        .as_ref()
                        .map_or("development", |v| v[0].as_str())
                        .to_owned();
                    s.post(
                        &format!("/environments/{e}/sdk-keys"),
                        json!({"name": format!("sdk{n}")}),
                    )
                    .await
                    .expect(201)
                    .body["secret"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                } else {
                    let mut body = json!({"name": format!("caller{n}"), "role": role});
                    if let Some(e) = &envs {
                        body["environments"] = json!(e);
                    }
                    s.post("/tokens", body).await.expect(201).body["secret"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                };
                let fill = |t: &str| {
                    t.replace("{E}", &env)
                        .replace("{K}", &format!("k{n}"))
                        .replace("{N}", &format!("new{n}"))
                        .replace("{T}", &token_id)
                };
                let path = fill(route.path);
                let body = route.body.map(|f| {
                    serde_json::from_str::<Value>(&fill(&f().to_string())).unwrap_or(Value::Null)
                });
                let allowed = role != "sdk"
                    && route.allowed.contains(&role)
                    && !(route.scoped && matches!(limit, Limit::ToOther))
                    && (!route.unlimited || matches!(limit, Limit::None));
                let want = if allowed { route.ok } else { 403 };
                let got = s
                    .call(route.method.clone(), &path, Some(&secret), body, &[])
                    .await;
                if got.status.as_u16() != want {
                    failures.push(format!(
                        "{} {} as {role} ({limit:?}): want {want}, got {} {}",
                        route.method, route.path, got.status, got.body
                    ));
                }
            }
        }
    }
    anyhow::ensure!(
        failures.is_empty(),
        "{} of {n} cases wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    anyhow::ensure!(n == routes().len() * 20, "{n} cases");
    s.stop().await
}

/// A limited admin manages tokens within its environments only: no wider token, no
/// revoking one that reaches beyond them, no new environment, and it lists only what it
/// could manage. An admin limited to nothing (`[]`) can do none of it.
pub(crate) async fn limited_admin(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let staging = s.token("staging-admin", "admin", Some(&["staging"])).await;
    let none = s.token("nothing-admin", "admin", Some(&[])).await;
    let call = |token: String, method: Method, path: &'static str, body: Option<Value>| {
        let s = &s;
        async move { s.call(method, path, Some(&token), body, &[]).await }
    };
    // Within its environments: a token limited to staging, and revoking it.
    let made = call(
        staging.clone(),
        Method::POST,
        "/tokens",
        Some(json!({"name": "staging-ci", "role": "ci", "environments": ["staging"]})),
    )
    .await
    .expect(201);
    let id = made.body["token"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Beyond them: unlimited, or another environment too, or a new environment.
    for body in [
        json!({"name": "wide", "role": "admin"}),
        json!({"name": "wide", "role": "viewer", "environments": ["staging", "production"]}),
    ] {
        call(staging.clone(), Method::POST, "/tokens", Some(body))
            .await
            .expect(403);
    }
    call(
        staging.clone(),
        Method::POST,
        "/environments",
        Some(json!({"key": "mine"})),
    )
    .await
    .expect(403);
    // It sees only the tokens it could manage, and cannot revoke the bootstrap admin.
    let listed = call(staging.clone(), Method::GET, "/tokens", None)
        .await
        .expect(200);
    let names: Vec<&str> = listed.body["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    // (A token limited to nothing is narrower than staging too.)
    let mut names = names;
    names.sort_unstable();
    assert_eq!(names, vec!["nothing-admin", "staging-admin", "staging-ci"]);
    let all = s.get("/tokens").await.expect(200).body;
    let bootstrap = all["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == "admin")
        .and_then(|t| t["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let r = s
        .call(
            Method::DELETE,
            &format!("/tokens/{bootstrap}"),
            Some(&staging),
            None,
            &[],
        )
        .await
        .expect(403);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("beyond"),
        "{}",
        r.body
    );
    s.call(
        Method::DELETE,
        &format!("/tokens/{id}"),
        Some(&staging),
        None,
        &[],
    )
    .await
    .expect(204);
    // Limited to nothing: only tokens limited to nothing.
    call(
        none.clone(),
        Method::POST,
        "/tokens",
        Some(json!({"name": "x", "role": "admin"})),
    )
    .await
    .expect(403);
    call(
        none.clone(),
        Method::POST,
        "/tokens",
        Some(json!({"name": "y", "role": "admin", "environments": ["staging"]})),
    )
    .await
    .expect(403);
    // The unlimited admin still can.
    s.post("/tokens", json!({"name": "z", "role": "admin"}))
        .await
        .expect(201);
    s.stop().await
}
