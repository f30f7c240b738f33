//! The REST API under `/api/v1`, and health endpoints. Documented in `docs/api.md`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flagd_core::{FlagSet, Strictness};
use serde_json::{Map, Value, json};

use crate::auth::{self, Caller, Perm, Role};
use crate::error::{ApiError, ApiResult};
use crate::store::{self, AuditQuery, ChangeKind, Committed, ItemKind, Items, Store};

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The store.
    pub store: Arc<Store>,
    /// Live push to SDKs.
    pub hub: Arc<crate::stream::Hub>,
}

/// The whole router.
pub fn router(state: AppState, options: &crate::server::Options) -> anyhow::Result<Router> {
    let api = Router::new()
        .route(
            "/environments",
            get(list_environments).post(create_environment),
        )
        .route(
            "/environments/{env}",
            get(get_environment).delete(delete_environment),
        )
        .route(
            "/environments/{env}/flags",
            get(get_flag_set).put(import_flag_set),
        )
        .route(
            "/environments/{env}/flags/{key}",
            get(get_flag).put(put_flag).delete(delete_flag),
        )
        .route(
            "/environments/{env}/flags/{key}/disable",
            post(disable_flag),
        )
        .route("/environments/{env}/flags/{key}/enable", post(enable_flag))
        .route(
            "/environments/{env}/flags/{key}/rollout",
            post(rollout_flag),
        )
        .route(
            "/environments/{env}/flags/{key}/restore",
            post(restore_flag),
        )
        .route("/environments/{env}/versions", get(list_versions))
        .route("/environments/{env}/versions/{version}", get(get_version))
        .route("/environments/{env}/diff", get(diff_versions))
        .route("/environments/{env}/revert", post(revert))
        .route("/environments/{env}/sdk-keys", post(create_sdk_key))
        .route("/environments/{env}/fleet", get(crate::stream::fleet))
        .route(
            "/environments/{env}/fleet/{instance}",
            axum::routing::delete(crate::stream::forget),
        )
        .route("/stream", get(crate::stream::stream))
        .route("/validate", post(validate))
        .route("/audit", get(audit_log))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/environments/{env}/flag-summaries", get(flag_summaries))
        .route("/environments/{env}/preview", post(preview))
        .merge(crate::ui::api_routes())
        .fallback(|| async { ApiError::NotFound("no such API route".into()) });
    Ok(Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::scrape))
        .nest("/api/v1", api)
        .merge(crate::ui::routes())
        .merge(match cors(&options.cors_origins)? {
            Some(layer) => crate::ofrep::routes().layer(layer),
            // Without origins there is nothing to allow, and tower-http's CORS layer
            // costs every evaluation a clone and a header map.
            None => crate::ofrep::routes(),
        })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .layer(axum::middleware::from_fn(crate::ui::security_headers))
        .layer(DefaultBodyLimit::max(options.max_body_bytes))
        .with_state(state))
}

/// CORS for browser OFREP providers: the configured origins may POST with the headers
/// a provider sends, and read the `ETag`.
fn cors(origins: &[String]) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .map(|o| {
                    HeaderValue::from_str(o.trim()).map_err(|_| {
                        anyhow::anyhow!("--cors-allowed-origins: {o:?} is not a valid origin")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        )
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([axum::http::Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::IF_NONE_MATCH,
                axum::http::HeaderName::from_static("x-api-key"),
            ])
            .expose_headers([header::ETAG])
            .max_age(std::time::Duration::from_secs(600)),
    ))
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.ready().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": e.to_string()})),
        )
            .into_response(),
    }
}

/// A JSON request body: 400 with the position for malformed JSON, 413 over the limit.
/// The content type is not required, so `curl -d` works as typed.
#[derive(Debug)]
pub struct Body(pub Value);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(
                    "the request body is larger than the server accepts (--max-body-bytes)".into(),
                )
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {e}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::BadRequest(
                "the request body is empty; a JSON object is expected".into(),
            ));
        }
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| malformed(&e))
    }
}

/// 400 for JSON that does not parse, with its position.
fn malformed(e: &serde_json::Error) -> ApiError {
    let text = e.to_string();
    let what = text
        .rfind(" at line ")
        .map_or(text.as_str(), |i| &text[..i]);
    ApiError::BadRequest(format!(
        "malformed JSON at line {} column {}: {what}",
        e.line(),
        e.column()
    ))
}

impl Body {
    fn object(&self) -> ApiResult<&Map<String, Value>> {
        self.0
            .as_object()
            .ok_or_else(|| ApiError::invalid("", "the body must be a JSON object"))
    }

    fn reason(&self, required: bool) -> ApiResult<Option<String>> {
        match self.object()?.get("reason") {
            Some(Value::String(r)) if !r.trim().is_empty() => Ok(Some(r.clone())),
            None | Some(Value::Null) if !required => Ok(None),
            Some(Value::String(_)) | None | Some(Value::Null) => Err(ApiError::invalid(
                "reason",
                "is required: say why, for the audit log",
            )),
            Some(_) => Err(ApiError::invalid("reason", "must be a string")),
        }
    }

    fn version(&self) -> ApiResult<u64> {
        match self.object()?.get("version") {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| ApiError::invalid("version", "must be a whole number ≥ 0")),
            None => Err(ApiError::invalid("version", "is required")),
        }
    }
}

/// `If-Match: 12` (or `"12"`): the version a change is based on.
fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(h) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = h.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse::<u64>().map(Some).map_err(|_| {
        ApiError::BadRequest(format!(
            "If-Match must be a flag-set version such as \"12\", got {text:?}"
        ))
    })
}

/// An optional reason in `X-Change-Reason`, for writes whose body is a document.
/// Header values are ASCII, so a reason in any language comes percent-encoded as UTF-8
/// after `UTF-8''` (RFC 8187), which browsers' `encodeURIComponent` produces.
fn header_reason(headers: &HeaderMap) -> Option<String> {
    let raw = headers
        .get("x-change-reason")
        .and_then(|h| h.to_str().ok())
        .map(str::trim)?;
    let text = match raw
        .strip_prefix("UTF-8''")
        .or_else(|| raw.strip_prefix("utf-8''"))
    {
        Some(encoded) => percent_decode(encoded)?,
        None => raw.to_owned(),
    };
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn query_u64(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<u64>> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "query parameter {name} must be a whole number, got {v:?}"
                ))
            })
        })
        .transpose()
}

fn limit(q: &HashMap<String, String>) -> ApiResult<u32> {
    let l = query_u64(q, "limit")?.unwrap_or(50);
    if !(1..=1000).contains(&l) {
        return Err(ApiError::BadRequest(format!(
            "limit must be from 1 to 1000, got {l}"
        )));
    }
    Ok(u32::try_from(l).unwrap_or(50))
}

fn with_version(version: u64, body: Value, status: StatusCode) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&version.to_string()) {
        resp.headers_mut().insert("x-flag-set-version", v);
    }
    resp
}

/// Announces a committed change to the SDKs, then answers it.
async fn committed(s: &AppState, c: &Committed) -> Response {
    s.hub.publish(c).await;
    if c.changed {
        s.hub
            .metrics
            .changes
            .get_or_create(&crate::metrics::ChangeLabels {
                environment: c.environment.as_str().into(),
                kind: c.kind.as_str().into(),
            })
            .inc();
        // Open UI pages learn who changed what.
        let flags = &c.changed_flags[..c.changed_flags.len().min(100)];
        s.hub.notify_ui(crate::ui::UiEvent {
            environment: Some(c.environment.clone()),
            name: "change",
            data: json!({"environment": c.environment, "version": c.version, "kind": c.kind,
                "author": c.author, "reason": c.reason, "changedFlags": flags,
                "at": store::rfc3339(c.at)}),
        });
    }
    with_version(c.version, json!(c), StatusCode::OK)
}

async fn list_environments(caller: Caller, State(s): State<AppState>) -> ApiResult<Response> {
    caller.check(Perm::Read, None)?;
    let envs: Vec<_> = s
        .store
        .environments()
        .await?
        .into_iter()
        .filter(|e| caller.sees(&e.key))
        .collect();
    Ok(Json(json!({"environments": envs})).into_response())
}

fn valid_key(key: &str, what: &str) -> ApiResult<()> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "key",
            format!("a {what} key is 1–64 letters, digits, '-' or '_', got {key:?}"),
        ))
    }
}

/// A display name (an environment's, a token's): 1 to 256 bytes, no control characters.
fn valid_name(field: &str, name: &str) -> ApiResult<()> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid(field, "must be a non-empty string"));
    }
    if name.len() > 256 {
        return Err(ApiError::invalid(
            field,
            format!("is {} bytes long; at most 256 bytes", name.len()),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

async fn create_environment(
    caller: Caller,
    State(s): State<AppState>,
    body: Body,
) -> ApiResult<Response> {
    // A new environment lies outside any list a limited token has.
    caller.check_unlimited(Perm::ManageEnvironments)?;
    let o = body.object()?;
    let key = o
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("key", "is required (a string)"))?;
    valid_key(key, "environment")?;
    let name = match o.get("name") {
        None | Some(Value::Null) => key,
        Some(Value::String(n)) => n.as_str(),
        Some(_) => return Err(ApiError::invalid("name", "must be a string")),
    };
    valid_name("name", name)?;
    let production = match o.get("production") {
        None | Some(Value::Null) => key == "production",
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("production", "must be a boolean")),
    };
    let env = s
        .store
        .create_environment(&caller.name, key, name, production)
        .await?;
    s.hub.notify_ui(crate::ui::UiEvent {
        environment: None,
        name: "environments",
        data: json!({}),
    });
    Ok((StatusCode::CREATED, Json(json!(env))).into_response())
}

async fn get_environment(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let e = s.store.environment(&env).await?;
    Ok(with_version(e.version, json!(e), StatusCode::OK))
}

async fn delete_environment(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.check(Perm::ManageEnvironments, Some(&env))?;
    let force = match q.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "force must be true or false, got {other:?}"
            )));
        }
    };
    s.store
        .delete_environment(
            &caller.name,
            &env,
            force,
            header_reason(&headers).as_deref(),
        )
        .await?;
    s.hub.notify_ui(crate::ui::UiEvent {
        environment: None,
        name: "environments",
        data: json!({}),
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /environments/{env}/flag-summaries`: every flag with the version that last
/// changed it, for the UI's list.
async fn flag_summaries(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let (v, items) = s.store.items(&env, None).await?;
    let mut last = s.store.last_changes(&env).await?;
    let mut flags: Vec<&store::Item> = items
        .values()
        .filter(|i| i.kind == ItemKind::Flag)
        .collect();
    flags.sort_by_key(|i| i.position);
    let flags: Vec<Value> = flags
        .into_iter()
        .map(|i| json!({"key": i.key, "definition": i.definition, "lastChange": last.remove(&i.key)}))
        .collect();
    Ok(with_version(
        v,
        json!({"environment": env, "version": v, "flags": flags}),
        StatusCode::OK,
    ))
}

/// `POST /environments/{env}/preview` `{"key", "flag", "contexts": [...]}`: evaluates an
/// unsaved definition with the environment's shared evaluators, by flagd's own
/// evaluator; changes nothing.
async fn preview(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let o = body.object()?;
    let key = match o.get("key") {
        Some(Value::String(k)) => k.clone(),
        _ => return Err(ApiError::invalid("key", "is required (the flag's key)")),
    };
    let flag = o.get("flag").filter(|f| f.is_object()).ok_or_else(|| {
        ApiError::invalid("flag", "is required (the flag's definition, an object)")
    })?;
    let contexts = match o.get("contexts") {
        Some(Value::Array(c)) if c.len() <= 100 => c,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "contexts",
                "at most 100 contexts at once",
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                "contexts",
                "is required (an array of objects)",
            ));
        }
    };
    let (v, items) = s.store.items(&env, None).await?;
    let mut doc = Map::new();
    doc.insert("flags".into(), json!({ key.clone(): flag }));
    if let Some(e) = flagd_core::document::assemble(&items).get("$evaluators") {
        doc.insert("$evaluators".into(), e.clone());
    }
    let set =
        FlagSet::parse(&Value::Object(doc), Strictness::Strict).map_err(|e| ApiError::Invalid {
            message: format!(
                "flag \"{key}\" is not valid: {} problem{}",
                e.0.len(),
                if e.0.len() == 1 { "" } else { "s" }
            ),
            details: e.0,
        })?;
    let snapshot = flagd_core::Snapshot::compile(&set, v);
    let mut results = Vec::with_capacity(contexts.len());
    for (i, c) in contexts.iter().enumerate() {
        let ctx = flagd_core::EvaluationContext::from_json(c)
            .map_err(|e| ApiError::invalid(&format!("contexts[{i}]"), e.to_string()))?;
        let d = snapshot.evaluate(&key, &ctx);
        results.push(json!({
            "value": d.value,
            "variant": d.variant,
            "reason": d.reason.as_str(),
            "errorCode": d.error_code.map(|c| c.as_str()),
            "errorMessage": d.error_message,
        }));
    }
    Ok(Json(json!({"version": v, "results": results})).into_response())
}

async fn get_flag_set(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let (v, items) = s.store.items(&env, query_u64(&q, "version")?).await?;
    Ok(with_version(
        v,
        flagd_core::document::assemble(&items),
        StatusCode::OK,
    ))
}

async fn get_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let (v, items) = s.store.items(&env, query_u64(&q, "version")?).await?;
    let item = items.get(&(ItemKind::Flag, key.clone())).ok_or_else(|| {
        ApiError::NotFound(format!("no flag \"{key}\" in \"{env}\" at version {v}"))
    })?;
    Ok(with_version(v, item.definition.clone(), StatusCode::OK))
}

/// Validates one flag strictly, in the context of the set's evaluators, so that
/// problems carry paths such as `flags.new-checkout.defaultVariant`.
fn validate_flag(key: &str, def: &Value, head: &Items) -> ApiResult<()> {
    let evaluators: Map<String, Value> = head
        .values()
        .filter(|i| i.kind == ItemKind::Evaluator)
        .map(|i| (i.key.clone(), i.definition.clone()))
        .collect();
    flagd_core::document::validate_flag(key, def, &evaluators).map_err(|details| {
        ApiError::Invalid {
            message: format!(
                "flag \"{key}\" is not valid: {} problem{}",
                details.len(),
                if details.len() == 1 { "" } else { "s" }
            ),
            details,
        }
    })
}

async fn put_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::EditFlags, Some(&env))?;
    let mut def = body.object()?.clone();
    match def.remove("key") {
        None => {}
        Some(Value::String(k)) if k == key => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "key",
                format!("the body names flag {other} but the URL names \"{key}\""),
            ));
        }
    }
    let def = Value::Object(def);
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    let evaluators = tx.evaluators().await?;
    validate_flag(&key, &def, &evaluators)?;
    let exists = tx.get(ItemKind::Flag, &key).await?.is_some();
    tx.put(ItemKind::Flag, &key, Some(def), None).await?;
    let (kind, action) = if exists {
        (ChangeKind::Update, "flag.update")
    } else {
        (ChangeKind::Create, "flag.create")
    };
    let c = tx
        .commit(
            kind,
            &caller.name,
            header_reason(&headers).as_deref(),
            action,
            &key,
            None,
        )
        .await?;
    let mut resp = committed(&s, &c).await;
    if !exists {
        *resp.status_mut() = StatusCode::CREATED;
    }
    Ok(resp)
}

async fn delete_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.check(Perm::EditFlags, Some(&env))?;
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    if tx.get(ItemKind::Flag, &key).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "no flag \"{key}\" in \"{env}\""
        )));
    }
    tx.put(ItemKind::Flag, &key, None, None).await?;
    let c = tx
        .commit(
            ChangeKind::Delete,
            &caller.name,
            header_reason(&headers).as_deref(),
            "flag.delete",
            &key,
            None,
        )
        .await?;
    Ok(committed(&s, &c).await)
}

async fn set_state(
    s: &AppState,
    caller: &Caller,
    env: &str,
    key: &str,
    headers: &HeaderMap,
    body: &Body,
    state: &str,
) -> ApiResult<Response> {
    caller.check(Perm::KillSwitch, Some(env))?;
    let reason = body.reason(true)?;
    let mut tx = s.store.begin_write(env, if_match(headers)?).await?;
    let item = tx
        .get(ItemKind::Flag, key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no flag \"{key}\" in \"{env}\"")))?;
    let mut def = item.definition;
    if let Value::Object(o) = &mut def {
        o.insert("state".into(), Value::String(state.into()));
    }
    tx.put(ItemKind::Flag, key, Some(def), None).await?;
    let action = if state == "DISABLED" {
        "flag.disable"
    } else {
        "flag.enable"
    };
    let c = tx
        .commit(
            ChangeKind::Toggle,
            &caller.name,
            reason.as_deref(),
            action,
            key,
            None,
        )
        .await?;
    Ok(committed(s, &c).await)
}

async fn disable_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    set_state(&s, &caller, &env, &key, &headers, &body, "DISABLED").await
}

async fn enable_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    set_state(&s, &caller, &env, &key, &headers, &body, "ENABLED").await
}

async fn rollout_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Rollout, Some(&env))?;
    let o = body.object()?;
    let variant = o
        .get("variant")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("variant", "is required (a variant name)"))?;
    let percent = o
        .get("percent")
        .and_then(Value::as_f64)
        .ok_or_else(|| ApiError::invalid("percent", "is required (a number from 0 to 100)"))?;
    let reason = body.reason(false)?;
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    let item = tx
        .get(ItemKind::Flag, &key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no flag \"{key}\" in \"{env}\"")))?;
    let def = flagd_core::document::rollout::set_percent(&item.definition, variant, percent)
        .map_err(|p| ApiError::invalid(&p.path, p.message))?;
    let evaluators = tx.evaluators().await?;
    validate_flag(&key, &def, &evaluators)?;
    tx.put(ItemKind::Flag, &key, Some(def), None).await?;
    let c = tx
        .commit(
            ChangeKind::Rollout,
            &caller.name,
            reason.as_deref(),
            "flag.rollout",
            &key,
            None,
        )
        .await?;
    Ok(committed(&s, &c).await)
}

async fn restore_flag(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Revert, Some(&env))?;
    let version = body.version()?;
    let reason = body.reason(true)?;
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    let then = tx.at(version).await?;
    let old = then.get(&(ItemKind::Flag, key.clone()));
    tx.put(
        ItemKind::Flag,
        &key,
        old.map(|i| i.definition.clone()),
        old.map(|i| i.position),
    )
    .await?;
    let c = tx
        .commit(
            ChangeKind::Revert,
            &caller.name,
            reason.as_deref(),
            "flag.restore",
            &key,
            Some(version),
        )
        .await?;
    Ok(committed(&s, &c).await)
}

async fn revert(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Revert, Some(&env))?;
    let version = body.version()?;
    let reason = body.reason(true)?;
    let empty = match body.object()?.get("empty") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(ApiError::invalid("empty", "must be true or false")),
    };
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    // Emptying an environment is one call away from a typo (`0` for `10`): possible,
    // but only said explicitly.
    if !empty && version <= tx.base_version() && tx.flag_count_at(version).await? == 0 {
        let head = tx.base_version();
        let flags = tx.flag_count_at(head).await?;
        if flags > 0 {
            return Err(ApiError::invalid(
                "version",
                format!(
                    "version {version} holds no flags: reverting to it removes all {flags} flags of \"{env}\"; send \"empty\": true to confirm (flagctl revert --empty)"
                ),
            ));
        }
    }
    tx.revert_to(version).await?;
    let c = tx
        .commit(
            ChangeKind::Revert,
            &caller.name,
            reason.as_deref(),
            "flagset.revert",
            &env,
            Some(version),
        )
        .await?;
    Ok(committed(&s, &c).await)
}

async fn import_flag_set(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Import, Some(&env))?;
    let set = FlagSet::parse(&body.0, Strictness::Strict).map_err(|e| ApiError::Invalid {
        message: format!(
            "the flag set is not valid: {} problem{}",
            e.0.len(),
            if e.0.len() == 1 { "" } else { "s" }
        ),
        details: e.0,
    })?;
    let mut tx = s.store.begin_write(&env, if_match(&headers)?).await?;
    let head = tx.head().await?;
    let incoming = flagd_core::document::items_of(&set.to_json());
    let keep: std::collections::HashSet<(ItemKind, String)> = incoming
        .iter()
        .map(|(k, key, _)| (*k, key.clone()))
        .collect();
    let mut wanted: Vec<(ItemKind, String, Option<Value>, Option<i64>)> = head
        .keys()
        .filter(|k| !keep.contains(*k))
        .map(|(kind, key)| (*kind, key.clone(), None, None))
        .collect();
    wanted.extend(
        incoming
            .into_iter()
            .map(|(kind, key, def)| (kind, key, Some(def), None)),
    );
    tx.apply(&head, wanted).await?;
    let c = tx
        .commit(
            ChangeKind::Import,
            &caller.name,
            header_reason(&headers).as_deref(),
            "flagset.import",
            &env,
            None,
        )
        .await?;
    Ok(committed(&s, &c).await)
}

async fn validate(caller: Caller, body: Body) -> ApiResult<Response> {
    caller.check(Perm::Validate, None)?;
    match FlagSet::parse(&body.0, Strictness::Strict) {
        Ok(set) => Ok(
            Json(json!({"valid": true, "flags": set.flags.len(), "errors": []})).into_response(),
        ),
        Err(e) => Ok(Json(json!({"valid": false, "flags": 0, "errors": e.0})).into_response()),
    }
}

async fn list_versions(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let limit = limit(&q)?;
    let versions = s
        .store
        .versions(
            &env,
            q.get("flag").map(String::as_str),
            query_u64(&q, "before")?,
            // One more than asked: whether an older page exists, without guessing.
            limit + 1,
        )
        .await?;
    let mut versions = versions;
    let more = versions.len() > limit as usize;
    versions.truncate(limit as usize);
    let next = more.then(|| versions.last().map(|v| v.version)).flatten();
    Ok(Json(json!({"versions": versions, "next": next})).into_response())
}

async fn get_version(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let v: u64 = version.parse().map_err(|_| {
        ApiError::BadRequest(format!("a version is a whole number, got {version:?}"))
    })?;
    let info = s.store.version(&env, v).await?;
    let (_, items) = s.store.items(&env, Some(v)).await?;
    Ok(with_version(
        v,
        json!({"version": info, "document": flagd_core::document::assemble(&items)}),
        StatusCode::OK,
    ))
}

async fn diff_versions(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let head = s.store.environment(&env).await?.version;
    let from = query_u64(&q, "from")?
        .ok_or_else(|| ApiError::BadRequest("query parameter from is required".into()))?;
    let to = query_u64(&q, "to")?.unwrap_or(head);
    let (_, a) = s.store.items(&env, Some(from)).await?;
    let (_, b) = s.store.items(&env, Some(to)).await?;
    Ok(
        Json(json!({"environment": env, "from": from, "to": to, "changes": flagd_core::document::diff(&a, &b)}))
            .into_response(),
    )
}

fn parse_time(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    let Some(v) = q.get(name) else {
        return Ok(None);
    };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    let t = humantime::parse_rfc3339_weak(v).map_err(|_| {
        ApiError::BadRequest(format!(
            "{name} must be an RFC 3339 time (2026-11-22T10:00:00Z) or Unix milliseconds, got {v:?}"
        ))
    })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Ok(Some(ms))
}

async fn audit_log(
    caller: Caller,
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let env = q.get("environment").cloned();
    caller.check(Perm::Read, env.as_deref())?;
    let query = AuditQuery {
        env,
        flag: q.get("flag").cloned(),
        actor: q.get("actor").cloned(),
        action: q.get("action").cloned(),
        since: parse_time(&q, "since")?,
        until: parse_time(&q, "until")?,
        before_id: query_u64(&q, "before")?.map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
        // One more than asked: whether an older page exists, without guessing.
        limit: limit(&q)? + 1,
        allowed_envs: caller.environments.clone(),
    };
    let mut entries = s.store.audit_log(&query).await?;
    let page = query.limit as usize - 1;
    let more = entries.len() > page;
    entries.truncate(page);
    let next = more.then(|| entries.last().map(|e| e.id)).flatten();
    Ok(Json(json!({"entries": entries, "next": next})).into_response())
}

async fn list_tokens(caller: Caller, State(s): State<AppState>) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, None)?;
    // A limited admin sees the tokens it could manage: none wider than itself.
    let tokens: Vec<_> = s
        .store
        .tokens()
        .await?
        .into_iter()
        .filter(|t| caller.covers(t.environments.as_deref()))
        .collect();
    Ok(Json(json!({"tokens": tokens})).into_response())
}

async fn create_token(
    caller: Caller,
    State(s): State<AppState>,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, None)?;
    let o = body.object()?;
    let name = o
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("name", "is required (a non-empty string)"))?;
    valid_name("name", name)?;
    let role_name = o.get("role").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid(
            "role",
            "is required: viewer, editor, responder, ci or admin",
        )
    })?;
    let role = Role::parse(role_name)
        .filter(|r| *r != Role::Sdk)
        .ok_or_else(|| ApiError::invalid("role", format!("\"{role_name}\" is not a role (viewer, editor, responder, ci, admin); SDK keys are made per environment")))?;
    let envs = match o.get("environments") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for (i, e) in a.iter().enumerate() {
                let e = e.as_str().ok_or_else(|| {
                    ApiError::invalid(&format!("environments[{i}]"), "must be an environment key")
                })?;
                if s.store.environment(e).await.is_err() {
                    return Err(ApiError::invalid(
                        &format!("environments[{i}]"),
                        format!("no environment \"{e}\""),
                    ));
                }
                out.push(e.to_owned());
            }
            Some(out)
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "environments",
                "must be a list of environment keys",
            ));
        }
    };
    if !caller.covers(envs.as_deref()) {
        return Err(ApiError::Forbidden(format!(
            "this token is limited to environments [{}]: it may only create tokens limited to them (give \"environments\")",
            caller
                .environments
                .as_deref()
                .unwrap_or_default()
                .join(", ")
        )));
    }
    let secret = auth::new_secret("fd_")?;
    let info = s
        .store
        .create_token(
            &caller.name,
            &auth::new_id()?,
            name,
            role.as_str(),
            envs.as_deref(),
            &auth::hash_secret(&secret),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": info, "secret": secret})),
    )
        .into_response())
}

async fn create_sdk_key(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    raw: Bytes,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, Some(&env))?;
    s.store.environment(&env).await?;
    let id = auth::new_id()?;
    // The body is optional: `{"name": "..."}` or nothing.
    let body: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&raw).map_err(|e| malformed(&e))?
    };
    let name = match body.get("name") {
        None | Some(Value::Null) => format!("sdk-{env}-{id}"),
        Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
        Some(_) => return Err(ApiError::invalid("name", "must be a non-empty string")),
    };
    valid_name("name", &name)?;
    let secret = auth::new_secret("fdsdk_")?;
    let info = s
        .store
        .create_token(
            &caller.name,
            &id,
            &name,
            Role::Sdk.as_str(),
            Some(&[env]),
            &auth::hash_secret(&secret),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"sdkKey": info, "secret": secret})),
    )
        .into_response())
}

async fn revoke_token(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, None)?;
    if caller.environments.is_some() {
        // A limited admin revokes only tokens within its environments.
        let target = s.store.token_by_id(&id).await?;
        if let Some(t) = target
            && !caller.covers(t.environments.as_deref())
        {
            return Err(ApiError::Forbidden(format!(
                "this token is limited to environments [{}]: it may not revoke a token that reaches beyond them",
                caller
                    .environments
                    .as_deref()
                    .unwrap_or_default()
                    .join(", ")
            )));
        }
    }
    s.store.revoke_token(&caller.name, &id).await?;
    s.hub.revoke(crate::stream::Revoked::Token(id));
    Ok(StatusCode::NO_CONTENT.into_response())
}
