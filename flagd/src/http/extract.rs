//! What every handler reads from a request, in one place: the JSON body, `If-Match`,
//! the reason header, query parameters, the caller (token or session), and the
//! response that carries a version.

use super::*;
use crate::auth::*;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// A JSON request body: 400 with the position for malformed JSON, 413 over the limit.
/// The content type is not required, so `curl -d` works as typed.
#[derive(Debug)]
pub(super) struct Body(pub Value);

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
pub(crate) fn malformed(e: &serde_json::Error) -> ApiError {
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
    /// The body read as `T` (a typed request body): 422 naming the field's JSON path
    /// and what is wrong with it (`percent: invalid type: string "x", expected f64`), or
    /// which field is missing (`variant: is required`).
    pub(crate) fn fields<T: serde::de::DeserializeOwned>(&self) -> ApiResult<T> {
        self.object()?;
        serde_path_to_error::deserialize(&self.0).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            // serde says a missing field's name in its message, at the object's path.
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
            {
                let at = if path == "." {
                    field.to_owned()
                } else {
                    format!("{path}.{field}")
                };
                return ApiError::invalid(&at, "is required");
            }
            ApiError::invalid(if path == "." { "" } else { &path }, message)
        })
    }

    pub(crate) fn object(&self) -> ApiResult<&Map<String, Value>> {
        self.0
            .as_object()
            .ok_or_else(|| ApiError::invalid("", "the body must be a JSON object"))
    }

    pub(crate) fn reason(&self, required: bool) -> ApiResult<Option<String>> {
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

    pub(crate) fn version(&self) -> ApiResult<u64> {
        match self.object()?.get("version") {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| ApiError::invalid("version", "must be a whole number ≥ 0")),
            None => Err(ApiError::invalid("version", "is required")),
        }
    }
}

/// `If-Match: 12` (or `"12"`): the version a change is based on.
pub(crate) fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
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

/// `If-Flag-Version: N`: the change is based on the flag as version N left it (the
/// version that last changed this flag, `lastChange.version`), whatever happened to
/// other flags since; refused with 409 when another version changed the flag after.
pub(crate) async fn guard_flag(
    tx: &mut crate::store::WriteTx<'_>,
    headers: &HeaderMap,
    key: &str,
) -> ApiResult<()> {
    let Some(h) = headers.get("if-flag-version") else {
        return Ok(());
    };
    let text = h.to_str().unwrap_or_default().trim().trim_matches('"');
    let based = text.parse::<u64>().map_err(|_| {
        ApiError::BadRequest(format!(
            "If-Flag-Version must be the version that last changed the flag, such as \"12\", got {text:?}"
        ))
    })?;
    let last = tx.flag_version(key).await?;
    if last != based {
        return Err(ApiError::FlagConflict {
            message: format!(
                "the change is based on flag \"{key}\" as v{based} left it, but v{last} changed it since"
            ),
            current_flag_version: last,
        });
    }
    Ok(())
}

/// An optional reason in `X-Change-Reason`, for writes whose body is a document.
/// Header values are ASCII, so a reason in any language comes percent-encoded as UTF-8
/// after `UTF-8''` (RFC 8187), which browsers' `encodeURIComponent` produces.
pub(crate) fn header_reason(headers: &HeaderMap) -> Option<String> {
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

pub(crate) fn percent_decode(s: &str) -> Option<String> {
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

pub(crate) fn query_u64(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<u64>> {
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

/// A `true`/`false` query parameter (false when absent).
pub(crate) fn query_bool(q: &HashMap<String, String>, name: &str) -> ApiResult<bool> {
    match q.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::invalid(
            name,
            format!("must be true or false, got \"{other}\""),
        )),
    }
}

pub(crate) fn limit(q: &HashMap<String, String>) -> ApiResult<u32> {
    let l = query_u64(q, "limit")?.unwrap_or(50);
    if !(1..=1000).contains(&l) {
        return Err(ApiError::BadRequest(format!(
            "limit must be from 1 to 1000, got {l}"
        )));
    }
    Ok(u32::try_from(l).unwrap_or(50))
}

pub(crate) fn with_version(version: u64, body: Value, status: StatusCode) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&version.to_string()) {
        resp.headers_mut().insert("x-flag-set-version", v);
    }
    resp
}

pub(crate) fn valid_key(key: &str, what: &str) -> ApiResult<()> {
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
pub(crate) fn valid_name(field: &str, name: &str) -> ApiResult<()> {
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

pub(crate) fn parse_time(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
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

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// A bearer token, or else the UI's session cookie. A cookie is sent by the browser
    /// on its own, so a change made with it must also carry the session's CSRF token,
    /// which only the page holds.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            let Some(secret) = cookie(&parts.headers, SESSION_COOKIE) else {
                return Err(ApiError::Unauthorized(
                    "missing Authorization: Bearer <token> (or a signed-in session)".into(),
                ));
            };
            let hash = hash_secret(secret);
            let session = state.store.session(&hash).await?.ok_or_else(|| {
                ApiError::Unauthorized("the session has ended; sign in again".into())
            })?;
            let safe = matches!(
                parts.method,
                axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
            );
            if !safe {
                let sent = parts
                    .headers
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if !same_secret(sent, &session.csrf) {
                    return Err(ApiError::Csrf(format!(
                        "a change made with a session needs its CSRF token in {CSRF_HEADER}"
                    )));
                }
            }
            return caller_of_session(session.principal, Some(hash));
        };
        let value = header
            .to_str()
            .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
        let basic;
        let secret = match value.strip_prefix("Basic ") {
            // Basic auth, for what can send no bearer token (Alertmanager's
            // `basic_auth`): the password is the token, the user name anything.
            Some(b64) => {
                basic = basic_password(b64.trim()).ok_or_else(|| {
                    ApiError::Unauthorized(
                        "the Authorization header's Basic credentials are not base64 of \"user:token\"".into(),
                    )
                })?;
                basic.as_str()
            }
            None => value
                .strip_prefix("Bearer ")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    ApiError::Unauthorized(
                        "the Authorization header must be \"Bearer <token>\" (or \"Basic\" with the token as the password)".into(),
                    )
                })?,
        };
        let token = state
            .store
            .token_by_hash(&hash_secret(secret))
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked token".into()))?;
        caller_of(token, None)
    }
}

/// The password of Basic credentials (`base64("user:password")`).
fn basic_password(b64: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_, password) = text.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}
