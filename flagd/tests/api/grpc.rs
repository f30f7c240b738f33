//! OpenFeature flagd's gRPC services over a real loopback socket, driven by tonic
//! clients built from the same vendored protocol definitions: whole sets on connect and
//! after each change, the event stream's messages, evaluations identical to OFREP's,
//! authentication and selectors, the fleet's "not acknowledged" instances, a set over
//! the message limit, revocation and shutdown.

use std::time::Duration;

use flagd::grpc::proto::evaluation as v1;
use flagd::grpc::proto::evaluation_v2 as v2;
use flagd::grpc::proto::sync;
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::support::{Backend, Server, sdk_key};

const P: &str = "/environments/production";
const WAIT: Duration = Duration::from_secs(20);

/// A typed answer: value, reason, variant, metadata.
type Typed = (
    Option<Value>,
    String,
    Option<String>,
    Option<prost_types::Struct>,
);

struct Grpc {
    server: Server,
    addr: std::net::SocketAddr,
    key: String,
}

async fn start(b: &Backend, max_message: usize) -> anyhow::Result<Grpc> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let grpc = flagd::grpc::Options {
        max_message,
        keepalive: Duration::from_millis(300),
        ..flagd::grpc::Options::on(vec![listener])
    };
    let options = flagd::server::Options {
        grpc: Some(grpc),
        ..flagd::server::Options::default()
    };
    let server = Server::start_with(b, options).await?;
    let key = sdk_key(&server, "production").await;
    Ok(Grpc { server, addr, key })
}

impl Grpc {
    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("an address")
            .connect()
            .await
            .expect("gRPC connects")
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        with_key(msg, &self.key)
    }
}

fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ASCII"),
    );
    r
}

fn flags() -> Value {
    json!({
        "flags": {
            "new-checkout": {
                "state": "ENABLED",
                "variants": {"on": true, "off": false},
                "defaultVariant": "off",
                "targeting": {"if": [{"$ref": "pro"}, "on", "off"]},
                "metadata": {"owner": "checkout"},
            },
            "banner": {
                "state": "ENABLED",
                "variants": {"a": "hello", "b": "hi"},
                "defaultVariant": "a",
                "targeting": {"fractional": [["a", 50], ["b", 50]]},
            },
            "retries": {"state": "ENABLED", "variants": {"few": 2, "many": 10}, "defaultVariant": "few",
                        "targeting": {"if": [{">=": [{"var": "age"}, 40]}, "many", null]}},
            "ratio": {"state": "ENABLED", "variants": {"low": 0.25, "high": 0.75}, "defaultVariant": "low"},
            "theme": {"state": "ENABLED", "variants": {"dark": {"bg": "#000", "n": 1}}, "defaultVariant": "dark"},
            "off-flag": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
            "no-default": {"state": "ENABLED", "variants": {"on": true, "off": false},
                           "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", null]}},
            "broken": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
                       "targeting": {"var": "pick"}},
        },
        "$evaluators": {"pro": {"in": [{"var": "plan"}, ["pro", "enterprise"]]}},
        "metadata": {"team": "web"},
    })
}

fn contexts() -> Vec<Value> {
    vec![
        json!({}),
        json!({"targetingKey": "user-1", "plan": "pro", "age": 41}),
        json!({"targetingKey": "user-2", "plan": "free", "age": 12, "pick": "nope"}),
        json!({"targetingKey": "user-3", "plan": "enterprise", "nested": {"a": [1, "x"]}}),
    ]
}

fn to_struct(v: &Value) -> prost_types::Struct {
    fn value(v: &Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.iter().map(value).collect(),
            }),
            Value::Object(_) => Kind::StructValue(to_struct(v)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    prost_types::Struct {
        fields: v
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect(),
    }
}

fn from_struct(s: &prost_types::Struct) -> Value {
    fn value(v: &prost_types::Value) -> Value {
        use prost_types::value::Kind;
        match &v.kind {
            None | Some(Kind::NullValue(_)) => Value::Null,
            Some(Kind::BoolValue(b)) => json!(b),
            Some(Kind::NumberValue(n)) => json!(n),
            Some(Kind::StringValue(s)) => json!(s),
            Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value).collect()),
            Some(Kind::StructValue(s)) => from_struct(s),
        }
    }
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect(),
    )
}

/// Numbers compare as numbers (protobuf carries only doubles).
fn numeric(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(numeric).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), numeric(v))).collect()),
        other => other.clone(),
    }
}

async fn ofrep(s: &Server, key: &str, flag: &str, ctx: &Value) -> (u16, Value) {
    let url = format!(
        "{}/ofrep/v1/evaluate/flags/{flag}",
        s.base.trim_end_matches("/api/v1")
    );
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .body(json!({"context": ctx}).to_string())
        .send()
        .await
        .expect("OFREP answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn next<T>(stream: &mut tonic::Streaming<T>) -> Result<T, tonic::Status> {
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => panic!("the stream ended with OK: providers would not reconnect"),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("nothing on the stream within {WAIT:?}"),
    }
}

fn configuration(r: &sync::SyncFlagsResponse) -> Value {
    serde_json::from_str(&r.flag_configuration).expect("the configuration is JSON")
}

/// Waits for the fleet view to satisfy `ok`.
async fn fleet_until(s: &Server, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let fleet = s.get(&format!("{P}/fleet")).await.expect(200).body;
        if ok(&fleet) {
            return fleet;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fleet never became as expected: {fleet}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn sync_and_events(b: Backend) -> anyhow::Result<()> {
    let g = start(&b, flagd::grpc::DEFAULT_MAX_MESSAGE).await?;
    let s = &g.server;
    s.put(&format!("{P}/flags"), flags()).await.expect(200);

    let mut client = sync::flag_sync_service_client::FlagSyncServiceClient::new(g.channel().await);
    let mut stream = client
        .sync_flags(g.request(sync::SyncFlagsRequest {
            provider_id: "checkout-sidecar".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    let first = next(&mut stream).await?;
    assert_eq!(first.sync_context, Some(prost_types::Struct::default()));
    let doc = configuration(&first);
    assert_eq!(
        doc["flags"]["new-checkout"],
        flags()["flags"]["new-checkout"]
    );
    assert_eq!(doc["$evaluators"], flags()["$evaluators"]);
    // The set's metadata as it is: a version in it would make every change a change of
    // every flag to providers, which merge it into each flag's.
    assert_eq!(doc["metadata"], json!({"team": "web"}));

    let mut events_client = v2::service_client::ServiceClient::new(g.channel().await);
    let mut events = events_client
        .event_stream(g.request(v2::EventStreamRequest {}))
        .await?
        .into_inner();
    let ready = next(&mut events).await?;
    assert_eq!(ready.r#type, "provider_ready");
    assert_eq!(
        from_struct(&ready.data.unwrap())["flagSetVersion"],
        json!(1.0)
    );

    // Both appear in the fleet, connected, sent version 1, not acknowledging.
    let fleet = fleet_until(s, |f| {
        f["instances"]
            .as_array()
            .is_some_and(|i| i.len() == 2 && i.iter().all(|i| i["sentVersion"] == 1))
    })
    .await;
    assert_eq!(
        (
            fleet["total"].clone(),
            fleet["onVersion"].clone(),
            fleet["providers"].clone()
        ),
        (json!(2), json!(0), json!(2)),
        "{fleet}"
    );
    for i in fleet["instances"].as_array().unwrap() {
        assert_eq!(i["acknowledges"], false, "{i}");
        assert_eq!(i["appliedVersion"], Value::Null, "{i}");
        assert_eq!(i["state"], "connected", "{i}");
        assert_eq!(
            i["keyName"]
                .as_str()
                .map(|k| k.starts_with("sdk-production")),
            Some(true),
            "{i}"
        );
    }
    let sync_instance = fleet["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["labels"]["protocol"] == "flagd.sync.v1")
        .cloned()
        .expect("the sync provider is in the fleet");
    assert_eq!(sync_instance["labels"]["providerId"], "checkout-sidecar");

    // A kill switch: the whole set again, and the event naming the flag.
    s.post(
        &format!("{P}/flags/new-checkout/disable"),
        json!({"reason": "incident"}),
    )
    .await
    .expect(200);
    let second = next(&mut stream).await?;
    let doc = configuration(&second);
    assert_eq!(doc["flags"]["new-checkout"]["state"], "DISABLED");
    let change = next(&mut events).await?;
    assert_eq!(change.r#type, "configuration_change");
    assert_eq!(
        from_struct(&change.data.unwrap()),
        json!({"flags": {"new-checkout": {"type": "update"}}, "flagSetVersion": 2.0})
    );

    // A shared evaluator's change updates every flag that uses it; a new flag is a
    // write, a deleted one a delete.
    let mut doc3 = flags();
    doc3["$evaluators"]["pro"] = json!({"==": [{"var": "plan"}, "pro"]});
    doc3["flags"]["new-checkout"]["state"] = json!("DISABLED");
    doc3["flags"].as_object_mut().unwrap().remove("ratio");
    doc3["flags"]["fresh"] =
        json!({"state": "ENABLED", "variants": {"x": "y"}, "defaultVariant": "x"});
    s.put(&format!("{P}/flags"), doc3).await.expect(200);
    let change = next(&mut events).await?;
    assert_eq!(
        from_struct(&change.data.unwrap())["flags"],
        json!({"new-checkout": {"type": "update"}, "ratio": {"type": "delete"}, "fresh": {"type": "write"}})
    );
    let third = next(&mut stream).await?;
    let doc = configuration(&third);
    assert_eq!(doc["flags"]["fresh"]["defaultVariant"], "x");
    assert_eq!(
        doc["$evaluators"]["pro"],
        json!({"==": [{"var": "plan"}, "pro"]})
    );

    // A revert to version 1 reaches both.
    s.post(
        &format!("{P}/revert"),
        json!({"version": 1, "reason": "roll back"}),
    )
    .await
    .expect(200);
    let fourth = next(&mut stream).await?;
    let doc = configuration(&fourth);
    assert_eq!(doc["flags"]["new-checkout"]["state"], "ENABLED");
    assert!(doc["flags"].get("fresh").is_none() && doc["flags"].get("ratio").is_some());
    let change = next(&mut events).await?;
    let changed = from_struct(&change.data.unwrap());
    assert_eq!(
        changed["flags"]["ratio"],
        json!({"type": "write"}),
        "{changed}"
    );
    assert_eq!(
        changed["flags"]["fresh"],
        json!({"type": "delete"}),
        "{changed}"
    );

    // keep_alive between changes (every 300 ms here).
    let alive = next(&mut events).await?;
    assert_eq!(alive.r#type, "keep_alive");

    let fleet = fleet_until(s, |f| {
        f["instances"]
            .as_array()
            .is_some_and(|i| i.iter().all(|i| i["sentVersion"] == 4))
    })
    .await;
    assert_eq!(
        fleet["onVersion"], 0,
        "providers never count as having applied: {fleet}"
    );

    // FetchAllFlags answers the head; the deprecated GetMetadata answers an empty struct.
    let all = client
        .fetch_all_flags(g.request(sync::FetchAllFlagsRequest::default()))
        .await?
        .into_inner();
    assert_eq!(
        serde_json::from_str::<Value>(&all.flag_configuration)?,
        configuration(&fourth)
    );
    #[allow(deprecated)]
    let meta = client
        .get_metadata(g.request(sync::GetMetadataRequest {}))
        .await?
        .into_inner();
    assert_eq!(meta.metadata, Some(prost_types::Struct::default()));

    // A sync provider that goes is unreachable (it may still evaluate what it held); an
    // event-stream provider, which evaluates through flagd, is forgotten.
    drop(stream);
    drop(events);
    let fleet = fleet_until(s, |f| {
        f["instances"]
            .as_array()
            .is_some_and(|i| i.len() == 1 && i[0]["state"] == "unreachable")
    })
    .await;
    assert_eq!(fleet["instances"][0]["instance"], sync_instance["instance"]);
    assert_eq!(fleet["providers"], 1);

    // Back with the same provider id (same key, same host): its entry, not a second one.
    let mut again = client
        .sync_flags(g.request(sync::SyncFlagsRequest {
            provider_id: "checkout-sidecar".into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    next(&mut again).await?;
    let fleet = fleet_until(s, |f| {
        f["instances"]
            .as_array()
            .is_some_and(|i| i.len() == 1 && i[0]["state"] == "connected")
    })
    .await;
    assert_eq!(fleet["instances"][0]["instance"], sync_instance["instance"]);
    Ok(())
}

pub(crate) async fn evaluation_matches_ofrep(b: Backend) -> anyhow::Result<()> {
    let g = start(&b, flagd::grpc::DEFAULT_MAX_MESSAGE).await?;
    let s = &g.server;
    s.put(&format!("{P}/flags"), flags()).await.expect(200);
    let mut c2 = v2::service_client::ServiceClient::new(g.channel().await);
    let mut c1 = v1::service_client::ServiceClient::new(g.channel().await);
    let keys: Vec<String> = flags()["flags"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .chain(["does-not-exist".to_owned()])
        .collect();
    let mut compared = 0;
    for ctx in contexts() {
        for key in &keys {
            let (status, want) = ofrep(s, &g.key, key, &ctx).await;
            let context = Some(to_struct(&ctx));
            // Asked with the type of its value (OFREP carries none): every typed call.
            let kind = flags()["flags"][key]["variants"]
                .as_object()
                .and_then(|v| v.values().next().cloned())
                .unwrap_or(json!(true));
            let got: Result<Typed, tonic::Status> = match kind {
                Value::Bool(_) => c2
                    .resolve_boolean(g.request(v2::ResolveBooleanRequest {
                        flag_key: key.clone(),
                        context,
                    }))
                    .await
                    .map(|r| r.into_inner())
                    .map(|r| (r.value.map(|v| json!(v)), r.reason, r.variant, r.metadata)),
                Value::String(_) => c2
                    .resolve_string(g.request(v2::ResolveStringRequest {
                        flag_key: key.clone(),
                        context,
                    }))
                    .await
                    .map(|r| r.into_inner())
                    .map(|r| (r.value.map(|v| json!(v)), r.reason, r.variant, r.metadata)),
                Value::Number(n) if n.is_i64() => c2
                    .resolve_int(g.request(v2::ResolveIntRequest {
                        flag_key: key.clone(),
                        context,
                    }))
                    .await
                    .map(|r| r.into_inner())
                    .map(|r| (r.value.map(|v| json!(v)), r.reason, r.variant, r.metadata)),
                Value::Number(_) => c2
                    .resolve_float(g.request(v2::ResolveFloatRequest {
                        flag_key: key.clone(),
                        context,
                    }))
                    .await
                    .map(|r| r.into_inner())
                    .map(|r| (r.value.map(|v| json!(v)), r.reason, r.variant, r.metadata)),
                _ => c2
                    .resolve_object(g.request(v2::ResolveObjectRequest {
                        flag_key: key.clone(),
                        context,
                    }))
                    .await
                    .map(|r| r.into_inner())
                    .map(|r| {
                        (
                            r.value.map(|v| from_struct(&v)),
                            r.reason,
                            r.variant,
                            r.metadata,
                        )
                    }),
            };
            let what = format!("{key} for {ctx}: OFREP {status} {want}");
            match (status, got) {
                (200, Ok((value, reason, variant, metadata))) => {
                    assert_eq!(
                        value.as_ref().map(numeric),
                        want.get("value").map(numeric),
                        "{what}"
                    );
                    assert_eq!(json!(reason), want["reason"], "{what}");
                    assert_eq!(
                        variant.map(Value::from),
                        want.get("variant").cloned(),
                        "{what}"
                    );
                    assert_eq!(
                        metadata.as_ref().map(from_struct).map(|m| numeric(&m)),
                        Some(numeric(&want["metadata"])),
                        "{what}"
                    );
                }
                (404, Err(e)) => {
                    assert_eq!(want["errorCode"], "FLAG_NOT_FOUND", "{what}");
                    assert_eq!(e.code(), Code::NotFound, "{what}");
                }
                (400, Err(e)) => {
                    assert_eq!(e.code(), Code::Unknown, "{what}: {e:?}");
                    let code = want["errorCode"].as_str().unwrap();
                    assert!(e.message().starts_with(code), "{what}: {}", e.message());
                }
                (status, got) => panic!("{what}: gRPC answered {got:?} ({status})"),
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 4 * 9);

    // A type mismatch is INVALID_ARGUMENT, as flagd answers it.
    let e = c2
        .resolve_string(g.request(v2::ResolveStringRequest {
            flag_key: "new-checkout".into(),
            context: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("TYPE_MISMATCH"), "{e:?}");

    // v1 cannot leave a value out: a disabled flag is the zero value with DISABLED, a
    // flag without a value is NOT_FOUND, as flagd answers v1.
    let off = c1
        .resolve_boolean(g.request(v1::ResolveBooleanRequest {
            flag_key: "off-flag".into(),
            context: None,
        }))
        .await?
        .into_inner();
    assert_eq!(
        (off.value, off.reason.as_str(), off.variant.as_str()),
        (false, "DISABLED", "")
    );
    let none = c1
        .resolve_boolean(g.request(v1::ResolveBooleanRequest {
            flag_key: "no-default".into(),
            context: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound);
    let on = c1
        .resolve_boolean(g.request(v1::ResolveBooleanRequest {
            flag_key: "new-checkout".into(),
            context: Some(to_struct(&json!({"plan": "pro"}))),
        }))
        .await?
        .into_inner();
    assert_eq!(
        (on.value, on.reason.as_str(), on.variant.as_str()),
        (true, "TARGETING_MATCH", "on")
    );
    assert_eq!(
        from_struct(&on.metadata.unwrap()),
        json!({"owner": "checkout", "team": "web", "flagSetVersion": 1.0})
    );
    let int = c1
        .resolve_int(g.request(v1::ResolveIntRequest {
            flag_key: "retries".into(),
            context: Some(to_struct(&json!({"age": 40}))),
        }))
        .await?
        .into_inner();
    assert_eq!((int.value, int.variant.as_str()), (10, "many"));

    // ResolveAll leaves out what has no value (here the disabled flag), as flagd does.
    let all = c1
        .resolve_all(g.request(v1::ResolveAllRequest {
            context: Some(to_struct(&json!({"targetingKey": "u", "plan": "pro"}))),
        }))
        .await?
        .into_inner();
    let mut listed: Vec<&str> = all.flags.keys().map(String::as_str).collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        [
            "banner",
            "broken",
            "new-checkout",
            "no-default",
            "ratio",
            "retries",
            "theme"
        ]
    );
    assert_eq!(
        all.flags["theme"].value,
        Some(v1::any_flag::Value::ObjectValue(to_struct(
            &json!({"bg": "#000", "n": 1})
        )))
    );
    assert_eq!(
        from_struct(&all.metadata.unwrap()),
        json!({"team": "web", "flagSetVersion": 1.0})
    );
    Ok(())
}

pub(crate) async fn keys_selectors_limits_and_shutdown(b: Backend) -> anyhow::Result<()> {
    // A tiny message limit, so that a set of a few flags is over it.
    let g = start(&b, 2048).await?;
    let s = &g.server;
    s.put(&format!("{P}/flags"), json!({"flags": {"a": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}}))
        .await
        .expect(200);
    let channel = g.channel().await;
    let mut client = sync::flag_sync_service_client::FlagSyncServiceClient::new(channel.clone());
    let sync_with = |req: Request<sync::SyncFlagsRequest>| {
        let mut c = client.clone();
        async move { c.sync_flags(req).await.map(|_| ()) }
    };

    let no_key = sync_with(Request::new(sync::SyncFlagsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(no_key.code(), Code::Unauthenticated);
    assert!(no_key.message().contains("SDK key"), "{no_key:?}");
    let wrong = sync_with(with_key(sync::SyncFlagsRequest::default(), "fdsdk_unknown"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let admin = sync_with(with_key(
        sync::SyncFlagsRequest::default(),
        crate::support::ADMIN,
    ))
    .await
    .unwrap_err();
    assert_eq!(admin.code(), Code::PermissionDenied, "{admin:?}");

    // Selectors: the key's environment by any of its names; another is refused.
    for ok in [
        "",
        "production",
        "environment=production",
        "flagSetId=production",
    ] {
        let mut req = g.request(sync::SyncFlagsRequest::default());
        req.metadata_mut().insert("flagd-selector", ok.parse()?);
        sync_with(req)
            .await
            .unwrap_or_else(|e| panic!("selector {ok:?}: {e:?}"));
    }
    #[allow(deprecated)]
    let field = sync::SyncFlagsRequest {
        selector: "staging".into(),
        ..Default::default()
    };
    let other = sync_with(g.request(field)).await.unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    assert!(other.message().contains("\"staging\""), "{other:?}");
    let mut req = g.request(sync::SyncFlagsRequest::default());
    req.metadata_mut()
        .insert("flagd-selector", "source=database".parse()?);
    let bad = sync_with(req).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("`source`"), "{bad:?}");

    // The key as the channel's authority, for providers that cannot add metadata.
    let by_authority = Channel::from_shared(format!("http://{}", g.addr))?
        .origin(format!("http://{}", g.key).parse()?)
        .connect()
        .await?;
    let mut c = v2::service_client::ServiceClient::new(by_authority);
    let a = c
        .resolve_boolean(Request::new(v2::ResolveBooleanRequest {
            flag_key: "a".into(),
            context: None,
        }))
        .await?
        .into_inner();
    assert_eq!(a.value, Some(true));
    // Evaluations check the key and the selector as streams do.
    let resolve = |key: Option<&str>, selector: Option<&str>| {
        let mut c = v2::service_client::ServiceClient::new(channel.clone());
        let msg = v2::ResolveBooleanRequest {
            flag_key: "a".into(),
            context: None,
        };
        let mut req = match key {
            Some(k) => with_key(msg, k),
            None => Request::new(msg),
        };
        if let Some(sel) = selector {
            req.metadata_mut()
                .insert("flagd-selector", sel.parse().expect("ASCII"));
        }
        async move { c.resolve_boolean(req).await.map(|r| r.into_inner().value) }
    };
    assert_eq!(
        resolve(None, None).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        resolve(Some("fdsdk_unknown"), None)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        resolve(Some(crate::support::ADMIN), None)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        resolve(Some(&g.key), Some("staging"))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(resolve(Some(&g.key), Some("production")).await?, Some(true));

    // A set over the message limit is refused with its size, not sent to be dropped.
    let mut big = serde_json::Map::new();
    for i in 0..40 {
        big.insert(
            format!("flag-{i}"),
            json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}),
        );
    }
    s.put(&format!("{P}/flags"), json!({"flags": big}))
        .await
        .expect(200);
    let mut stream = client
        .sync_flags(g.request(sync::SyncFlagsRequest::default()))
        .await?
        .into_inner();
    let too_big = next(&mut stream).await.unwrap_err();
    assert_eq!(too_big.code(), Code::ResourceExhausted);
    assert!(
        too_big.message().contains("--grpc-max-message"),
        "{too_big:?}"
    );
    let fleet = fleet_until(s, |f| {
        f["instances"].as_array().is_some_and(|i| {
            i.iter()
                .any(|i| i["lastError"].as_str().is_some_and(|e| e.contains("MiB")))
        })
    })
    .await;
    assert!(
        fleet["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["acknowledges"] == false)
    );

    // Revoking the key ends its streams with UNAUTHENTICATED.
    s.put(&format!("{P}/flags"), json!({"flags": {"a": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}}))
        .await
        .expect(200);
    let key2 = s
        .post(&format!("{P}/sdk-keys"), json!({"name": "doomed"}))
        .await
        .expect(201)
        .body;
    let secret = key2["secret"].as_str().unwrap().to_owned();
    let id = key2["sdkKey"]["id"].as_str().unwrap().to_owned();
    let mut doomed = client
        .sync_flags(with_key(sync::SyncFlagsRequest::default(), &secret))
        .await?
        .into_inner();
    next(&mut doomed).await?;
    let mut doomed_events = v2::service_client::ServiceClient::new(channel.clone())
        .event_stream(with_key(v2::EventStreamRequest {}, &secret))
        .await?
        .into_inner();
    assert_eq!(next(&mut doomed_events).await?.r#type, "provider_ready");
    s.call(
        reqwest::Method::DELETE,
        &format!("/tokens/{id}"),
        Some(crate::support::ADMIN),
        None,
        &[],
    )
    .await
    .expect(204);
    let ended = next(&mut doomed).await.unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    loop {
        match next(&mut doomed_events).await {
            Ok(m) if m.r#type == "keep_alive" => {}
            Ok(m) => panic!("unexpected {m:?}"),
            Err(e) => {
                assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
                break;
            }
        }
    }

    // Shutdown ends the streams with UNAVAILABLE (providers reconnect; the JavaScript
    // one never does after a stream that ends with OK).
    let mut open = client
        .sync_flags(g.request(sync::SyncFlagsRequest::default()))
        .await?
        .into_inner();
    next(&mut open).await?;
    let Grpc { server, .. } = g;
    let stopping = tokio::spawn(server.stop());
    let end = next(&mut open).await.unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    stopping.await??;
    Ok(())
}
