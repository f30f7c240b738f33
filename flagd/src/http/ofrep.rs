//! OFREP, the OpenFeature Remote Evaluation Protocol (`POST /ofrep/v1/evaluate/flags/{key}`
//! and the bulk `POST /ofrep/v1/evaluate/flags`), so that every OpenFeature OFREP
//! provider, in any language, evaluates flags from flagd unchanged.
//!
//! Authenticated with an SDK key (`Authorization: Bearer` or `X-API-Key`), which names
//! the environment. Every request evaluates on the environment's head compiled once per
//! version ([`crate::hub::Hub::compiled`]), the same flag set the stream pushes: no
//! per-request parsing of flags.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use flagd_core::{Detail, ErrorCode, EvaluationContext, LenientContext, Reason, Snapshot};
use serde::Serialize;
use serde::de::IgnoredAny;
use serde::ser::SerializeMap;
use serde_json::{Map, Value, json};

use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::hub::SdkKey;
use crate::state::AppState;

/// The OFREP routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(single))
        .route("/ofrep/v1/evaluate/flags", post(bulk))
        .route("/ofrep/v1/evaluate/flags/", post(bulk))
}

fn failure(status: StatusCode, details: &str) -> Response {
    json_answer(status, &json!({"errorDetails": details}))
}

/// The environment of the SDK key the request carries, or the 401/403 answer.
async fn environment(s: &AppState, headers: &HeaderMap) -> Result<String, Response> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let key = bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        return Err(failure(
            StatusCode::UNAUTHORIZED,
            "an SDK key is required (Authorization: Bearer fdsdk_… or X-API-Key)",
        ));
    };
    match s.hub.sdk_key(key).await {
        Ok(SdkKey::Environment(env)) => Ok(env),
        Ok(SdkKey::NotAnSdkKey) => Err(failure(
            StatusCode::FORBIDDEN,
            "remote evaluation takes an SDK key, not an API token",
        )),
        Ok(SdkKey::Unknown) => Err(failure(
            StatusCode::UNAUTHORIZED,
            "unknown or revoked SDK key",
        )),
        Err(e) => Err(e.into_response()),
    }
}

/// The evaluation context of a request body `{"context": {...}}`, read from the text in
/// one pass. Lenient as flagd is: an empty body is an empty context, and so is a body or
/// a `context` that is not an object; JSON that does not parse is refused.
fn context(body: &Bytes) -> Result<EvaluationContext, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(EvaluationContext::empty());
    }
    serde_json::from_slice::<RequestBody>(body)
        .map(|b| b.0)
        .map_err(|e| format!("the body is not JSON: {e}"))
}

/// A request body's context: its `context` member when the body is an object (the last
/// one, as JSON readers keep), every other member and any other body skipped unread.
struct RequestBody(EvaluationContext);

impl<'de> serde::Deserialize<'de> for RequestBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RequestBodyVisitor)
    }
}

struct RequestBodyVisitor;

impl<'de> serde::de::Visitor<'de> for RequestBodyVisitor {
    type Value = RequestBody;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON request body")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RequestBody, A::Error> {
        let mut ctx = EvaluationContext::empty();
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if k == "context" {
                ctx = map.next_value::<LenientContext>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(RequestBody(ctx))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RequestBody, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RequestBody(EvaluationContext::empty()))
    }
    fn visit_unit<E>(self) -> Result<RequestBody, E> {
        Ok(RequestBody(EvaluationContext::empty()))
    }
    fn visit_bool<E>(self, _: bool) -> Result<RequestBody, E> {
        Ok(RequestBody(EvaluationContext::empty()))
    }
    fn visit_i64<E>(self, _: i64) -> Result<RequestBody, E> {
        Ok(RequestBody(EvaluationContext::empty()))
    }
    fn visit_u64<E>(self, _: u64) -> Result<RequestBody, E> {
        Ok(RequestBody(EvaluationContext::empty()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<RequestBody, E> {
        Ok(RequestBody(EvaluationContext::empty()))
    }
    fn visit_str<E>(self, _: &str) -> Result<RequestBody, E> {
        Ok(RequestBody(EvaluationContext::empty()))
    }
}

/// A flag's (or the set's) metadata plus `flagSetVersion`, serialized from borrowed data.
struct Metadata<'a> {
    entries: &'a Map<String, Value>,
    version: u64,
}

impl Serialize for Metadata<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.entries.len() + 1))?;
        for (k, v) in self.entries {
            if k != "flagSetVersion" {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry("flagSetVersion", &self.version)?;
        m.end()
    }
}

/// One flag's result, `evaluationSuccess` or `evaluationFailure`, borrowed from the
/// snapshot: serialized straight to the answer, no intermediate JSON value.
#[derive(Serialize)]
#[serde(untagged)]
enum Evaluation<'a> {
    #[serde(rename_all = "camelCase")]
    Success {
        key: &'a str,
        // Absent means "use your code default" (disabled, or no default variant).
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<&'a Value>,
        reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        variant: Option<&'a str>,
        metadata: Metadata<'a>,
    },
    #[serde(rename_all = "camelCase")]
    Failure {
        key: &'a str,
        error_code: &'static str,
        error_details: std::borrow::Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<Metadata<'a>>,
    },
}

/// One flag's result and its status.
fn result<'a>(
    key: &'a str,
    d: &'a Detail<'a>,
    snapshot: &Snapshot,
) -> (StatusCode, Evaluation<'a>) {
    let metadata = Metadata {
        entries: d.flag_metadata,
        version: snapshot.version(),
    };
    let Some(code) = d.error_code else {
        let disabled = d.reason == Reason::Disabled;
        return (
            StatusCode::OK,
            Evaluation::Success {
                key,
                value: d.value.filter(|_| !disabled),
                reason: d.reason.as_str(),
                variant: d.variant.filter(|_| !disabled),
                metadata,
            },
        );
    };
    let (status, error_code) = match code {
        ErrorCode::FlagNotFound => (StatusCode::NOT_FOUND, "FLAG_NOT_FOUND"),
        ErrorCode::ParseError => (StatusCode::BAD_REQUEST, "PARSE_ERROR"),
        ErrorCode::TargetingKeyMissing => (StatusCode::BAD_REQUEST, "TARGETING_KEY_MISSING"),
        ErrorCode::InvalidContext => (StatusCode::BAD_REQUEST, "INVALID_CONTEXT"),
        // Type mismatches cannot happen here (OFREP carries no type).
        ErrorCode::TypeMismatch | ErrorCode::General => (StatusCode::BAD_REQUEST, "GENERAL"),
    };
    let not_found = code == ErrorCode::FlagNotFound;
    let error_details = if not_found {
        std::borrow::Cow::Owned(format!("flag `{key}` does not exist"))
    } else {
        std::borrow::Cow::Borrowed(d.error_message.as_deref().unwrap_or("evaluation failed"))
    };
    (
        status,
        Evaluation::Failure {
            key,
            error_code,
            error_details,
            metadata: (!not_found).then_some(metadata),
        },
    )
}

fn json_answer(status: StatusCode, body: &impl Serialize) -> Response {
    // A single flag's answer fits: one allocation, no regrowth while writing.
    let mut bytes = Vec::with_capacity(256);
    match serde_json::to_writer(&mut bytes, body) {
        Ok(()) => {
            let mut r = (status, bytes).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        // Serializing borrowed JSON cannot fail; say so plainly if it ever does.
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// What both endpoints start with: the key's environment, the context, the compiled
/// head; or the answer that ends the request (`key` names the flag in a single-flag
/// failure).
async fn prepare(
    s: &AppState,
    request: Request,
    key: Option<&str>,
) -> Result<
    (
        String,
        EvaluationContext,
        std::sync::Arc<crate::hub::Compiled>,
    ),
    Response,
> {
    // The headers are read where they are (an extracted `HeaderMap` is a copy of them).
    let env = environment(s, request.headers()).await?;
    let body = Bytes::from_request(request, s)
        .await
        .map_err(IntoResponse::into_response)?;
    let ctx = context(&body).map_err(|e| {
        let mut failure = json!({"errorCode": "INVALID_CONTEXT", "errorDetails": e});
        if let Some(k) = key {
            failure["key"] = json!(k);
        }
        json_answer(StatusCode::BAD_REQUEST, &failure)
    })?;
    let compiled = s.hub.compiled(&env).await.map_err(internal)?;
    Ok((env, ctx, compiled))
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
async fn single(State(s): State<AppState>, Path(key): Path<String>, request: Request) -> Response {
    let (env, ctx, compiled) = match prepare(&s, request, Some(&key)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let d = compiled.snapshot.evaluate(&key, &ctx);
    count(&s, &env, &key, &d);
    let (status, body) = result(&key, &d, &compiled.snapshot);
    json_answer(status, &body)
}

/// Counts an evaluation for `/metrics` (flag keys are the only user-chosen label).
fn count(s: &AppState, env: &str, key: &str, d: &Detail<'_>) {
    s.hub.metrics.count_detail(env, key, d);
}

fn internal(e: ApiError) -> Response {
    let status = e.status();
    tracing::warn!(error = %e, "remote evaluation failed");
    failure(status, "flagd cannot evaluate now; see its log")
}

/// `POST /ofrep/v1/evaluate/flags`: every flag for one context, with an `ETag` for the
/// result (a provider revalidates with `If-None-Match` and gets 304 when nothing moved).
async fn bulk(State(s): State<AppState>, request: Request) -> Response {
    // Only If-None-Match is needed after the body is read: kept, not the whole map.
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let (env, ctx, compiled) = match prepare(&s, request, None).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let snapshot = &compiled.snapshot;
    let details: Vec<(&str, Detail<'_>)> = compiled
        .sorted_keys
        .iter()
        .map(|k| {
            let k = &**k;
            let d = snapshot.evaluate(k, &ctx);
            count(&s, &env, k, &d);
            (k, d)
        })
        .collect();
    let flags: Vec<Evaluation<'_>> = details
        .iter()
        .map(|(k, d)| result(k, d, snapshot).1)
        .collect();
    #[derive(Serialize)]
    struct Bulk<'a> {
        flags: Vec<Evaluation<'a>>,
        metadata: Metadata<'a>,
    }
    let body = Bulk {
        flags,
        metadata: Metadata {
            entries: snapshot.metadata(),
            version: snapshot.version(),
        },
    };
    let text = match serde_json::to_vec(&body) {
        Ok(t) => t,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let etag = super::ui::etag_of(&Sha256::digest(&text)[..16]);
    let mut conditional = HeaderMap::new();
    if let Some(v) = if_none_match {
        conditional.insert(header::IF_NONE_MATCH, v);
    }
    let mut r = if super::ui::not_modified(&conditional, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (StatusCode::OK, text).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}
