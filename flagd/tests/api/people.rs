//! People: accounts an admin creates, password sign-in, what a person's changes are
//! recorded under, lockout, disabling, and the tokens they create.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Resp, Server, error_paths, rollout_flag};

const P: &str = "/environments/production";

/// A person's UI session: the cookie and the CSRF token.
pub(crate) struct Person {
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

impl Person {
    pub(crate) async fn call(
        &self,
        s: &Server,
        m: Method,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        s.call(
            m,
            path,
            None,
            body,
            &[("cookie", &self.cookie), ("x-csrf-token", &self.csrf)],
        )
        .await
    }
}

pub(crate) async fn password_sign_in(s: &Server, login: &str, password: &str) -> Resp {
    s.call(
        Method::POST,
        "/session",
        None,
        Some(json!({"login": login, "password": password})),
        &[],
    )
    .await
}

/// Creates a person with a password and signs them in.
pub(crate) async fn person(s: &Server, login: &str, role: &str) -> Person {
    let password = format!("{login}-long-password");
    s.post(
        "/users",
        json!({"login": login, "name": login, "role": role, "password": password}),
    )
    .await
    .expect(201);
    signed_in(&password_sign_in(s, login, &password).await.expect(200))
}

pub(crate) fn signed_in(r: &Resp) -> Person {
    let set = r
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Person {
        cookie: set.split(';').next().unwrap_or_default().to_owned(),
        csrf: r.body["csrfToken"].as_str().unwrap_or_default().to_owned(),
    }
}

pub(crate) async fn accounts_and_passwords(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    let methods = s
        .call(Method::GET, "/session/methods", None, None, &[])
        .await
        .expect(200);
    assert_eq!(methods.body["password"], true);
    assert_eq!(methods.body["oidc"], Value::Null);

    // What an admin may create, and what is refused with the field named.
    for (body, path) in [
        (
            json!({"login": "x", "role": "editor", "password": "short"}),
            "password",
        ),
        (json!({"login": "x", "role": "sdk"}), "role"),
        (json!({"login": "has space", "role": "editor"}), "login"),
        (
            json!({"login": "x", "role": "editor", "environments": ["nowhere"]}),
            "environments[0]",
        ),
        (
            json!({"login": "x", "role": "editor", "email": "not-an-address"}),
            "email",
        ),
        (
            json!({"login": "x", "role": "editor", "colour": "blue"}),
            "colour",
        ),
    ] {
        let r = s.post("/users", body.clone()).await.expect(422);
        assert_eq!(error_paths(&r.body), vec![path], "{body} → {}", r.body);
    }
    let editor_token = s.token("ed", "editor", None).await;
    s.call(
        Method::POST,
        "/users",
        Some(&editor_token),
        Some(json!({"login": "x", "role": "viewer"})),
        &[],
    )
    .await
    .expect(403);
    let made = s
        .post(
            "/users",
            json!({"login": "Alice@Example.com", "name": "Alice Example", "role": "editor",
                   "password": "correct horse battery"}),
        )
        .await
        .expect(201);
    let alice_id = made.body["user"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(made.body["user"]["login"], "alice@example.com");
    assert_eq!(made.body["user"]["password"], true);
    assert!(made.body["user"].get("passwordHash").is_none());
    s.post(
        "/users",
        json!({"login": "alice@example.com", "role": "viewer"}),
    )
    .await
    .expect(409);

    // Wrong passwords and unknown logins get the same answer.
    let wrong = password_sign_in(&s, "alice@example.com", "not the password")
        .await
        .expect(401);
    let unknown = password_sign_in(&s, "nobody", "not the password")
        .await
        .expect(401);
    assert_eq!(
        wrong.body["error"]["message"],
        unknown.body["error"]["message"]
    );

    let r = password_sign_in(&s, "ALICE@example.com", "correct horse battery")
        .await
        .expect(200);
    assert_eq!(r.body["person"], true);
    assert_eq!(r.body["password"], true);
    assert_eq!(r.body["name"], "alice@example.com");
    assert_eq!(r.body["can"]["approve"], true);
    let alice = signed_in(&r);
    // Her change is hers: the version, the audit log.
    let c = alice
        .call(
            &s,
            Method::PUT,
            &format!("{P}/flags/checkout"),
            Some(rollout_flag(5)),
        )
        .await
        .expect(201);
    let v = c.version().unwrap_or_default();
    let version = s.get(&format!("{P}/versions/{v}")).await.expect(200);
    assert_eq!(version.body["version"]["author"], "alice@example.com");
    let audit = s.get("/audit?action=session.create").await.expect(200);
    let entry = &audit.body["entries"][0];
    assert_eq!(entry["actor"], "alice@example.com");
    assert_eq!(entry["reason"], "signed in with a password");
    // A token she creates carries her name.
    let admin_alice = {
        s.call(
            Method::PATCH,
            &format!("/users/{alice_id}"),
            Some(crate::support::ADMIN),
            Some(json!({"role": "admin"})),
            &[],
        )
        .await
        .expect(200);
        alice
            .call(
                &s,
                Method::POST,
                "/tokens",
                Some(json!({"name": "alice-ci", "role": "ci"})),
            )
            .await
            .expect(201)
    };
    assert_eq!(admin_alice.body["token"]["createdBy"], "alice@example.com");
    // A change of role applies to her open session at once.
    s.call(
        Method::PATCH,
        &format!("/users/{alice_id}"),
        Some(crate::support::ADMIN),
        Some(json!({"role": "viewer"})),
        &[],
    )
    .await
    .expect(200);
    alice
        .call(
            &s,
            Method::PUT,
            &format!("{P}/flags/checkout"),
            Some(rollout_flag(6)),
        )
        .await
        .expect(403);

    // Her own password: the current one is required, the new one must be long enough.
    alice
        .call(
            &s,
            Method::POST,
            "/session/password",
            Some(json!({"current": "nope", "new": "another long password"})),
        )
        .await
        .expect(422);
    let short = alice
        .call(
            &s,
            Method::POST,
            "/session/password",
            Some(json!({"current": "correct horse battery", "new": "short"})),
        )
        .await
        .expect(422);
    assert_eq!(error_paths(&short.body), vec!["new"]);
    alice
        .call(
            &s,
            Method::POST,
            "/session/password",
            Some(json!({"current": "correct horse battery", "new": "another long password"})),
        )
        .await
        .expect(204);
    password_sign_in(&s, "alice@example.com", "correct horse battery")
        .await
        .expect(401);
    password_sign_in(&s, "alice@example.com", "another long password")
        .await
        .expect(200);

    // Disabled: her sessions end and she cannot sign in.
    let alice_path = format!("/users/{alice_id}");
    let patch = |body: Value| {
        s.call(
            Method::PATCH,
            &alice_path,
            Some(crate::support::ADMIN),
            Some(body),
            &[],
        )
    };
    patch(json!({"shoe": 1})).await.expect(422);
    patch(json!({"disabled": true})).await.expect(200);
    alice
        .call(&s, Method::GET, "/session", None)
        .await
        .expect(401);
    password_sign_in(&s, "alice@example.com", "another long password")
        .await
        .expect(401);
    patch(json!({"disabled": false})).await.expect(200);
    password_sign_in(&s, "alice@example.com", "another long password")
        .await
        .expect(200);
    let audit = s.get("/audit?limit=200").await.expect(200);
    let actions: Vec<&str> = audit.body["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["target"] == "alice@example.com")
                .filter_map(|e| e["action"].as_str())
                .collect()
        })
        .unwrap_or_default();
    for a in [
        "user.create",
        "user.update",
        "user.password",
        "user.disable",
        "user.enable",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }

    // Ten wrong passwords in a row lock the account, even against the right one.
    person(&s, "bob", "editor").await;
    for _ in 0..10 {
        password_sign_in(&s, "bob", "wrong wrong wrong")
            .await
            .expect(401);
    }
    let locked = password_sign_in(&s, "bob", "bob-long-password")
        .await
        .expect(401);
    assert!(
        locked.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("locked until"),
        "{}",
        locked.body
    );
    let audit = s.get("/audit?action=user.lock").await.expect(200);
    assert_eq!(audit.body["entries"][0]["target"], "bob");

    // A limited admin manages only people within its environments.
    let staging_admin = s.token("stadmin", "admin", Some(&["staging"])).await;
    let call = |body: Value| {
        s.call(
            Method::POST,
            "/users",
            Some(&staging_admin),
            Some(body),
            &[],
        )
    };
    call(json!({"login": "wide", "role": "editor"}))
        .await
        .expect(403);
    call(json!({"login": "narrow", "role": "editor", "environments": ["staging"]}))
        .await
        .expect(201);
    let listed = s
        .call(Method::GET, "/users", Some(&staging_admin), None, &[])
        .await
        .expect(200);
    let logins: Vec<&str> = listed.body["users"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["login"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(logins, vec!["narrow"]);
    s.stop().await
}

/// An identity provider that cannot be reached stops nothing: the browser goes back
/// to the sign-in page saying why, and tokens, passwords and the SDK go on.
pub(crate) async fn provider_down(b: Backend) -> anyhow::Result<()> {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let options = flagd::server::Options {
        oidc: Some(flagd::people::oidc::OidcOptions {
            issuer: format!("http://127.0.0.1:{port}"),
            client_id: "flagd".into(),
            client_secret: Some("secret".into()),
            redirect_url: "http://127.0.0.1:1/api/v1/session/oidc/callback".into(),
            display_name: "Corp SSO".into(),
            role_claim: "groups".into(),
            roles: Vec::new(),
        }),
        ..Default::default()
    };
    let s = Server::start_with(&b, options).await?;
    let methods = s
        .call(Method::GET, "/session/methods", None, None, &[])
        .await
        .expect(200);
    assert_eq!(methods.body["oidc"]["name"], "Corp SSO");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = http.get(format!("{}/session/oidc", s.base)).send().await?;
    assert_eq!(r.status(), 303);
    let to = r.headers()["location"].to_str()?.to_owned();
    assert!(
        to.starts_with("/?signin_error=") && to.contains("cannot%20be%20reached"),
        "{to}"
    );
    // A forged callback is refused the same way, whatever the provider.
    let r = http
        .get(format!(
            "{}/session/oidc/callback?code=x&state=forged",
            s.base
        ))
        .send()
        .await?;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["location"]
            .to_str()?
            .starts_with("/?signin_error=")
    );
    person(&s, "pat", "responder").await;
    s.put(&format!("{P}/flags/checkout"), rollout_flag(5))
        .await
        .expect(201);
    s.post(
        &format!("{P}/flags/checkout/disable"),
        json!({"reason": "still works"}),
    )
    .await
    .expect(200);
    s.stop().await
}
