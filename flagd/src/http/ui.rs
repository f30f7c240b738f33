//! The admin UI: its files, embedded in the binary and served at `/` and `/ui/…`; UI
//! sessions (an HttpOnly cookie plus a CSRF token); the live event stream that keeps open
//! pages current; and the security headers on every response.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::extract::Body;
use crate::auth::{self, Caller, Perm, Role};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store;

#[derive(rust_embed::RustEmbed)]
#[folder = "../admin-ui/app/"]
struct Assets;

/// How long a UI session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// No inline script or style, nothing from another origin, never in a frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   font-src 'self'; connect-src 'self'; manifest-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

/// `/` and `/ui/{path}`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*path}", get(asset))
}

/// `/session` and `/events`, under `/api/v1`.
pub(super) fn api_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/session",
            get(get_session).post(create_session).delete(delete_session),
        )
        .route("/session/methods", get(super::people::sign_in_methods))
        .route("/session/password", post(super::people::change_password))
        .route("/session/oidc", get(super::people::oidc_begin))
        .route("/session/oidc/callback", get(super::people::oidc_callback))
        .route("/events", get(events))
}

/// Adds the security headers to every response that does not set its own.
/// Applied to every response by a `MapResponse` layer: a plain function of the
/// response, so that no request pays for a boxed middleware (`from_fn` boxes the rest of
/// the stack and its future on every call, remote evaluations included).
pub(super) fn security_headers(mut resp: Response) -> Response {
    use axum::http::HeaderName;
    // Parsed once: this runs on every request, remote evaluations included.
    static PAGE: [(HeaderName, &str); 5] = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    // What is not a page (JSON, OFREP answers, metrics, scripts) is never rendered as a
    // document: it needs no script or referrer policy, only never to be framed or
    // sniffed (OWASP's headers for REST responses). A third of the bytes of an OFREP
    // answer were the page's policy, parsed by every remote-evaluation client.
    static OTHER: [(HeaderName, &str); 3] = [
        (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    let h = resp.headers_mut();
    let page = h
        .get(header::CONTENT_TYPE)
        .is_none_or(|t| t.as_bytes().starts_with(b"text/html"));
    for (name, value) in if page { &PAGE[..] } else { &OTHER[..] } {
        if !h.contains_key(name) {
            h.insert(name.clone(), HeaderValue::from_static(value));
        }
    }
    resp
}

async fn index(headers: HeaderMap) -> Response {
    file("index.html", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    file(&path, &headers)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "webmanifest") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// One embedded file, revalidated on every load by its content hash, so a new flagd
/// never serves a stale UI from the browser's cache.
fn file(path: &str, headers: &HeaderMap) -> Response {
    let Some(f) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let etag = etag_of(&f.metadata.sha256_hash()[..12]);
    let mut resp = if not_modified(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = f.data.into_owned().into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
        r
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// A strong entity tag from the first bytes of a hash.
pub(crate) fn etag_of(hash: &[u8]) -> String {
    format!("\"{}\"", crate::auth::hex(hash))
}

/// Whether the request's `If-None-Match` names this entity tag (or `*`).
pub(crate) fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// What the page needs to know of the signed-in token or person.
/// `password`: whether the person has one (`None` for a token).
fn session_body(
    caller: &Caller,
    csrf: Option<&str>,
    expires_at: Option<i64>,
    password: Option<bool>,
) -> Value {
    let can = |p: Perm| auth::allows(caller.role, p);
    json!({
        "name": caller.name,
        "person": caller.user_id.is_some(),
        "password": password,
        "role": caller.role.as_str(),
        "environments": caller.environments,
        "csrfToken": csrf,
        "expiresAt": expires_at.map(store::rfc3339),
        "can": {
            "editFlags": can(Perm::EditFlags),
            "toggle": can(Perm::KillSwitch),
            "rollout": can(Perm::Rollout),
            "revert": can(Perm::Revert),
            "admin": can(Perm::ManageTokens),
            "approve": can(Perm::Approve) && caller.user_id.is_some(),
        },
    })
}

pub(super) fn session_cookie(
    value: &str,
    max_age: u64,
    headers: &HeaderMap,
) -> ApiResult<HeaderValue> {
    cookie_header(auth::SESSION_COOKIE, value, "/", "Strict", max_age, headers)
}

/// An HttpOnly cookie: `Secure` when the browser reached flagd over TLS (through a
/// proxy that says so).
pub(super) fn cookie_header(
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: u64,
    headers: &HeaderMap,
) -> ApiResult<HeaderValue> {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    ))
    .map_err(|e| ApiError::Internal(e.into()))
}

/// What signing in takes: an API token, or a person's login and password.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    /// An API token (`fd_…`).
    token: Option<String>,
    /// A person's login.
    login: Option<String>,
    /// Their password.
    password: Option<String>,
}

/// `POST /api/v1/session` `{"token": "fd_…"}` or `{"login": "…", "password": "…"}`:
/// signs in.
async fn create_session(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let b: SignIn = body.fields()?;
    if let Some(login) = &b.login {
        if b.token.is_some() {
            return Err(ApiError::invalid(
                "token",
                "give a token, or a login and password, not both",
            ));
        }
        return super::people::password_sign_in(
            &s,
            &headers,
            login,
            b.password.unwrap_or_default(),
        )
        .await;
    }
    let token = b.token.unwrap_or_default().trim().to_owned();
    if token.is_empty() {
        return Err(ApiError::invalid(
            "token",
            "is required: an API token (fd_…), or give login and password",
        ));
    }
    let info = s
        .store
        .token_by_hash(&auth::hash_secret(&token))
        .await?
        .ok_or_else(|| ApiError::Unauthorized("unknown or revoked token".into()))?;
    if info.role == Role::Sdk.as_str() {
        return Err(ApiError::Forbidden(
            "an SDK key cannot sign in to the admin UI; use an API token".into(),
        ));
    }
    open_session(&s, &headers, store::Principal::Token(info), "a token").await
}

/// Opens a session for a token or a person: the JSON the page needs, and the cookie.
pub(super) async fn open_session(
    s: &AppState,
    headers: &HeaderMap,
    principal: store::Principal,
    how: &str,
) -> ApiResult<Response> {
    let secret = auth::new_secret("fds_")?;
    let csrf = auth::new_secret("")?;
    let ttl_ms = i64::try_from(SESSION_TTL.as_millis()).unwrap_or(i64::MAX);
    let expires_at = store::now_ms().saturating_add(ttl_ms);
    let hash = auth::hash_secret(&secret);
    match &principal {
        store::Principal::Token(t) => s.store.create_session(t, &hash, &csrf, expires_at).await?,
        store::Principal::User(u) => {
            s.store
                .create_user_session(u, &hash, &csrf, expires_at, how)
                .await?;
        }
    }
    let password = match &principal {
        store::Principal::User(u) => Some(u.password),
        store::Principal::Token(_) => None,
    };
    let caller = auth::caller_of_session(principal, None)?;
    let mut resp = Json(session_body(
        &caller,
        Some(&csrf),
        Some(expires_at),
        password,
    ))
    .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&secret, SESSION_TTL.as_secs(), headers)?,
    );
    Ok(resp)
}

/// `GET /api/v1/session`: who is signed in, with the CSRF token (after a reload).
async fn get_session(caller: Caller, State(s): State<AppState>) -> ApiResult<Response> {
    let session = match &caller.session {
        Some(hash) => s.store.session(hash).await?,
        None => None,
    };
    let password = match &session {
        Some(store::Session {
            principal: store::Principal::User(u),
            ..
        }) => Some(u.password),
        _ => None,
    };
    Ok(Json(session_body(
        &caller,
        session.as_ref().map(|x| x.csrf.as_str()),
        session.as_ref().map(|x| x.expires_at),
        password,
    ))
    .into_response())
}

/// `DELETE /api/v1/session`: signs out (the CSRF token is required, as for any change).
async fn delete_session(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some(hash) = &caller.session else {
        return Err(ApiError::BadRequest(
            "no session to end: this request was made with a bearer token".into(),
        ));
    };
    s.store.delete_session(hash, &caller.name).await?;
    s.hub.revoke(crate::hub::Revoked::Session(hash.clone()));
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0, &headers)?);
    Ok(resp)
}

/// How often an open `/events` stream of a UI session checks that the session still
/// exists (a sign-out through another replica).
const SESSION_RECHECK: Duration = Duration::from_secs(5);

/// `GET /api/v1/events`: Server-Sent Events for the environments the caller sees.
async fn events(caller: Caller, State(s): State<AppState>) -> ApiResult<Response> {
    caller.check(Perm::Read, None)?;
    let rx = s.hub.ui_events();
    let closing = s.hub.closing();
    let revoked = s.hub.revocations();
    // A session's stream ends when the session does, even with nobody signing out.
    let ends = match &caller.session {
        Some(hash) => s.store.session(hash).await?.map(|x| x.expires_at),
        None => None,
    };
    let until = ends.map(|ms| {
        let left = u64::try_from(ms.saturating_sub(crate::store::now_ms())).unwrap_or(0);
        tokio::time::Instant::now() + Duration::from_millis(left)
    });
    // A sign-out through another replica is not announced here: the session is looked
    // up again every few seconds.
    let mut recheck = tokio::time::interval(SESSION_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let store = s.store.clone();
    let stream = futures_util::stream::unfold(
        (rx, closing, revoked, caller, recheck),
        move |(mut rx, mut closing, mut revoked, caller, mut recheck)| {
            let store = store.clone();
            async move {
                loop {
                    let expired = async {
                        match until {
                            Some(t) => tokio::time::sleep_until(t).await,
                            None => std::future::pending().await,
                        }
                    };
                    let ev = tokio::select! {
                        ev = rx.recv() => ev,
                        () = expired => return None,
                        // flagd is stopping: end the stream so that shutdown is not held up.
                        _ = closing.changed() => return None,
                        // The token was revoked or the session ended: nothing more for it.
                        r = revoked.recv() => match r {
                            Ok(crate::hub::Revoked::Token(t)) if t == caller.token_id => return None,
                            Ok(crate::hub::Revoked::Session(h)) if caller.session.as_deref() == Some(h.as_str()) => return None,
                            _ => continue,
                        },
                        _ = recheck.tick(), if caller.session.is_some() => {
                            let hash = caller.session.as_deref().unwrap_or_default();
                            // Gone means signed out (or its token revoked) anywhere; a store
                            // that cannot answer ends nothing.
                            if matches!(store.session(hash).await, Ok(None)) {
                                return None;
                            }
                            continue;
                        }
                    };
                    let event = match ev {
                        Ok(ev) => {
                            if !ev.environment.as_deref().is_none_or(|e| caller.sees(e)) {
                                continue;
                            }
                            Event::default().event(ev.name).data(ev.data.to_string())
                        }
                        // Missed some: the page reloads what it shows.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            Event::default().event("resync").data("{}")
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    };
                    return Some((
                        Ok::<_, Infallible>(event),
                        (rx, closing, revoked, caller, recheck),
                    ));
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
