//! OFREP over real HTTP: every status and error path, typed results with targeting and
//! fractional splits, bulk with ETag/304, CORS for browser providers.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{ADMIN, Backend, Server, sdk_key};

const P: &str = "/environments/production";

struct Ofrep {
    root: String,
    http: reqwest::Client,
}

impl Ofrep {
    fn new(s: &Server) -> Self {
        Self {
            root: s.base.trim_end_matches("/api/v1").to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut r = self
            .http
            .post(format!("{}/ofrep/v1/evaluate/{path}", self.root));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.body(b);
        }
        let resp = r.send().await.expect("request reaches flagd");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        )
    }

    async fn eval(&self, key: &str, sdk: &str, ctx: Value) -> (u16, Value) {
        let auth = format!("Bearer {sdk}");
        let (s, b, _) = self
            .post(
                &format!("flags/{key}"),
                &[("authorization", &auth)],
                Some(json!({"context": ctx}).to_string()),
            )
            .await;
        (s, b)
    }
}

fn flags() -> Value {
    json!({"flags": {
        "bool-split": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"fractional": [["on", 50], ["off", 50]]}},
        "color": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "red",
            "targeting": {"if": [{"in": [{"var": "country"}, ["NO", "SE"]]}, "blue", null]}},
        "limit": {"state": "ENABLED", "variants": {"low": 10, "high": 1000}, "defaultVariant": "low",
            "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "high", "low"]}},
        "ratio": {"state": "ENABLED", "variants": {"a": 0.25, "b": 0.75}, "defaultVariant": "a"},
        "config": {"state": "ENABLED", "variants": {"v1": {"retries": 3, "mode": "fast"}}, "defaultVariant": "v1",
            "metadata": {"team": "checkout"}},
        "killed": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
        "no-default": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": null,
            "targeting": {"if": [{"==": [{"var": "beta"}, true]}, "on", null]}},
        "by-tier": {"state": "ENABLED", "variants": {"gold": "gold", "silver": "silver"}, "defaultVariant": "silver",
            "targeting": {"var": "tier"}}
    }})
}

pub(crate) async fn evaluation(b: Backend) -> anyhow::Result<()> {
    let s = Server::start(&b).await?;
    s.put(&format!("{P}/flags"), flags()).await.expect(200);
    let sdk = sdk_key(&s, "production").await;
    let o = Ofrep::new(&s);

    // Typed results: boolean (fractional), string, integer, float, object.
    let (st, r) = o
        .eval("bool-split", &sdk, json!({"targetingKey": "user-1"}))
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["reason"], "TARGETING_MATCH");
    assert!(r["value"].is_boolean());
    assert_eq!(r["value"] == true, r["variant"] == "on");
    assert_eq!(r["metadata"]["flagSetVersion"], 1);
    // The same user always gets the same bucket; users spread over both.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let (_, r) = o
            .eval("bool-split", &sdk, json!({"targetingKey": format!("u{i}")}))
            .await;
        seen.insert(r["variant"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (_, r) = o
        .eval("color", &sdk, json!({"targetingKey": "u", "country": "NO"}))
        .await;
    assert_eq!(
        (r["value"].clone(), r["variant"].clone()),
        (json!("blue"), json!("blue"))
    );
    let (_, r) = o
        .eval("color", &sdk, json!({"targetingKey": "u", "country": "US"}))
        .await;
    assert_eq!(
        (r["value"].clone(), r["reason"].clone()),
        (json!("red"), json!("DEFAULT"))
    );
    let (_, r) = o
        .eval("limit", &sdk, json!({"targetingKey": "u", "plan": "pro"}))
        .await;
    assert_eq!(r["value"], json!(1000));
    assert!(r["value"].is_u64(), "an integer stays an integer: {r}");
    let (_, r) = o.eval("ratio", &sdk, json!({})).await;
    assert_eq!(
        (r["value"].clone(), r["reason"].clone()),
        (json!(0.25), json!("STATIC"))
    );
    let (_, r) = o.eval("config", &sdk, json!({})).await;
    assert_eq!(r["value"], json!({"retries": 3, "mode": "fast"}));
    assert_eq!(r["metadata"]["team"], "checkout");

    // Disabled, and no default variant: 200 without a value ("use your code default").
    let (st, r) = o.eval("killed", &sdk, json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(r["reason"], "DISABLED");
    assert!(
        r.get("value").is_none() && r.get("variant").is_none(),
        "{r}"
    );
    let (st, r) = o
        .eval("no-default", &sdk, json!({"targetingKey": "u"}))
        .await;
    assert_eq!((st, r["reason"].clone()), (200, json!("DEFAULT")));
    assert!(r.get("value").is_none(), "{r}");
    let (_, r) = o.eval("no-default", &sdk, json!({"beta": true})).await;
    assert_eq!(r["value"], true);

    // Errors: unknown flag 404; targeting naming no variant 400 GENERAL; bad JSON 400.
    let (st, r) = o.eval("nope", &sdk, json!({})).await;
    assert_eq!(st, 404);
    assert_eq!(
        (r["key"].clone(), r["errorCode"].clone()),
        (json!("nope"), json!("FLAG_NOT_FOUND"))
    );
    let (st, r) = o.eval("by-tier", &sdk, json!({"tier": "platinum"})).await;
    assert_eq!((st, r["errorCode"].clone()), (400, json!("GENERAL")), "{r}");
    let auth = format!("Bearer {sdk}");
    let (st, r, _) = o
        .post(
            "flags/color",
            &[("authorization", &auth)],
            Some("{oops".into()),
        )
        .await;
    assert_eq!(
        (st, r["errorCode"].clone()),
        (400, json!("INVALID_CONTEXT"))
    );
    // Lenient as flagd: an empty body is an empty context.
    let (st, r, _) = o
        .post("flags/ratio", &[("authorization", &auth)], None)
        .await;
    assert_eq!((st, r["value"].clone()), (200, json!(0.25)));
    // So is a body or a context that is not an object; other members are ignored and of
    // two contexts the last counts, as a JSON reader keeps it.
    for (body, value) in [
        (r#"["NO"]"#, "red"),
        (r#""NO""#, "red"),
        (r#"{"context": "NO"}"#, "red"),
        (r#"{"context": [{"country": "NO"}]}"#, "red"),
        (
            r#"{"extra": {"country": "NO"}, "context": {"country": "NO"}}"#,
            "blue",
        ),
        (
            r#"{"context": {"country": "NO"}, "context": {"country": "US"}}"#,
            "red",
        ),
        (
            r#"{"context": {"country": "US"}, "context": {"country": "SE"}}"#,
            "blue",
        ),
        (r#"{"context": {"country": "US", "country": "NO"}}"#, "blue"),
    ] {
        let (st, r, _) = o
            .post(
                "flags/color",
                &[("authorization", &auth)],
                Some(body.into()),
            )
            .await;
        assert_eq!((st, r["value"].clone()), (200, json!(value)), "{body}: {r}");
    }
    let (st, r, _) = o
        .post(
            "flags/color",
            &[("authorization", &auth)],
            Some(r#"{"context": {"country": "NO"}"#.into()),
        )
        .await;
    assert_eq!(
        (st, r["errorCode"].clone()),
        (400, json!("INVALID_CONTEXT"))
    );

    // Credentials: X-API-Key works; none or an unknown key is 401; an API token is 403.
    let (st, _, _) = o
        .post("flags/ratio", &[("x-api-key", &sdk)], Some("{}".into()))
        .await;
    assert_eq!(st, 200);
    assert_eq!(o.post("flags/ratio", &[], Some("{}".into())).await.0, 401);
    assert_eq!(
        o.post(
            "flags/ratio",
            &[("x-api-key", "fdsdk_nope")],
            Some("{}".into())
        )
        .await
        .0,
        401
    );
    let admin = format!("Bearer {ADMIN}");
    assert_eq!(
        o.post(
            "flags/ratio",
            &[("authorization", &admin)],
            Some("{}".into())
        )
        .await
        .0,
        403
    );

    // A change through the API is what the next evaluation sees.
    s.post(
        &format!("{P}/flags/color/disable"),
        json!({"reason": "test"}),
    )
    .await
    .expect(200);
    let (_, r) = o.eval("color", &sdk, json!({"country": "NO"})).await;
    assert_eq!(r["reason"], "DISABLED");
    assert_eq!(r["metadata"]["flagSetVersion"], 2);

    // Bulk: every flag, partial failures inline, ETag and 304.
    let ctx = json!({"context": {"targetingKey": "u", "tier": "platinum"}}).to_string();
    let (st, r, h) = o
        .post("flags", &[("authorization", &auth)], Some(ctx.clone()))
        .await;
    assert_eq!(st, 200);
    let items = r["flags"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 8);
    let by = |k: &str| {
        items
            .iter()
            .find(|f| f["key"] == k)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(by("by-tier")["errorCode"], "GENERAL");
    assert_eq!(by("killed")["reason"], "DISABLED");
    assert_eq!(by("limit")["value"], 10);
    assert_eq!(r["metadata"]["flagSetVersion"], 2);
    let etag = h["etag"].to_str()?.to_owned();
    let (st, _, _) = o
        .post(
            "flags",
            &[("authorization", &auth), ("if-none-match", &etag)],
            Some(ctx.clone()),
        )
        .await;
    assert_eq!(st, 304);
    // Another context, or a change, is a new result.
    let (st, _, h2) = o
        .post(
            "flags/",
            &[("authorization", &auth), ("if-none-match", &etag)],
            Some(json!({"context": {"targetingKey": "v", "plan": "pro"}}).to_string()),
        )
        .await;
    assert_eq!(st, 200);
    assert_ne!(h2["etag"].to_str()?, etag);
    s.post(
        &format!("{P}/flags/color/enable"),
        json!({"reason": "test"}),
    )
    .await
    .expect(200);
    let (st, _, _) = o
        .post(
            "flags",
            &[("authorization", &auth), ("if-none-match", &etag)],
            Some(ctx.clone()),
        )
        .await;
    assert_eq!(st, 200);
    let (st, r, _) = o
        .post("flags", &[("authorization", &auth)], Some("[".into()))
        .await;
    assert_eq!(
        (st, r["errorCode"].clone()),
        (400, json!("INVALID_CONTEXT"))
    );

    // A flag that comes and goes is what the next evaluation sees too: the compiled
    // head follows each change (only what changed is compiled).
    s.put(
        &format!("{P}/flags/fresh"),
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}),
    )
    .await
    .expect(201);
    let (st, r) = o.eval("fresh", &sdk, json!({})).await;
    assert_eq!((st, r["value"].clone()), (200, json!(true)), "{r}");
    let (_, r, _) = o
        .post("flags", &[("authorization", &auth)], Some(ctx.clone()))
        .await;
    assert_eq!(r["flags"].as_array().map(Vec::len), Some(9), "{r}");
    s.call(
        Method::DELETE,
        &format!("{P}/flags/fresh"),
        Some(ADMIN),
        None,
        &[],
    )
    .await
    .expect(200);
    let (st, r) = o.eval("fresh", &sdk, json!({})).await;
    assert_eq!(
        (st, r["errorCode"].clone()),
        (404, json!("FLAG_NOT_FOUND")),
        "{r}"
    );
    let (_, r, _) = o
        .post("flags", &[("authorization", &auth)], Some(ctx.clone()))
        .await;
    assert_eq!(r["flags"].as_array().map(Vec::len), Some(8), "{r}");

    // A revoked SDK key stops working at once on this replica.
    let keys = s.get("/tokens").await.expect(200).body;
    let id = keys["tokens"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["role"] == "sdk"))
        .and_then(|t| t["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    s.call(
        Method::DELETE,
        &format!("/tokens/{id}"),
        Some(ADMIN),
        None,
        &[],
    )
    .await
    .expect(204);
    assert_eq!(o.eval("ratio", &sdk, json!({})).await.0, 401);
    s.stop().await
}

pub(crate) async fn cors(b: Backend) -> anyhow::Result<()> {
    let s = Server::start_with(
        &b,
        flagd::server::Options {
            cors_origins: vec!["https://shop.example".into()],
            ..Default::default()
        },
    )
    .await?;
    let o = Ofrep::new(&s);
    let pre = o
        .http
        .request(
            Method::OPTIONS,
            format!("{}/ofrep/v1/evaluate/flags", o.root),
        )
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization, if-none-match",
        )
        .send()
        .await?;
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let r = o
        .http
        .post(format!("{}/ofrep/v1/evaluate/flags", o.root))
        .header("origin", "https://shop.example")
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()?
            .contains("etag")
    );
    // Another origin gets no CORS grant.
    let other = o
        .http
        .post(format!("{}/ofrep/v1/evaluate/flags", o.root))
        .header("origin", "https://evil.example")
        .send()
        .await?;
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    s.stop().await
}
