//! People: their accounts (admins create, change and disable them), signing in with a
//! password or with the identity provider, and changing one's own password.

use super::ui::{cookie_header, open_session};
use super::*;
use crate::people;
use crate::store::{NewUser, UserChange, UserInfo};

/// The cookie that ties an identity provider's callback to the browser that started
/// the sign-in (no one can sign a victim in to the attacker's account).
const OIDC_COOKIE: &str = "flagd_oidc";

/// `GET /session/methods`, public: how one may sign in, for the sign-in page.
pub(super) async fn sign_in_methods(State(s): State<AppState>) -> Response {
    let oidc = s
        .oidc
        .as_ref()
        .map(|o| json!({"name": o.options.display_name, "url": "/api/v1/session/oidc"}));
    Json(json!({"token": true, "password": true, "oidc": oidc})).into_response()
}

/// A password sign-in: the same answer and the same work for an unknown login, a
/// person without a password and a wrong password; a locked account says so.
pub(super) async fn password_sign_in(
    s: &AppState,
    headers: &HeaderMap,
    login: &str,
    password: String,
) -> ApiResult<Response> {
    let login = login.trim().to_lowercase();
    if password.is_empty() || password.chars().count() > people::MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            "password",
            format!(
                "is required (1 to {} characters)",
                people::MAX_PASSWORD_CHARS
            ),
        ));
    }
    let found = s.store.password_login(&login).await?;
    if let Some(until) = found.as_ref().and_then(|f| f.locked_until) {
        return Err(ApiError::Unauthorized(format!(
            "too many wrong passwords: this account is locked until {}",
            store::rfc3339(until)
        )));
    }
    let hash = found.as_ref().and_then(|f| f.hash.clone());
    let ok = people::verify_password(password, hash).await?;
    match found {
        Some(f) if ok => {
            open_session(s, headers, store::Principal::User(f.user), "a password").await
        }
        Some(f) => {
            s.store.failed_login(&f.user).await?;
            Err(ApiError::Unauthorized("wrong login or password".into()))
        }
        None => Err(ApiError::Unauthorized("wrong login or password".into())),
    }
}

/// `GET /session/oidc`: sends the browser to the identity provider, or back to the
/// sign-in page saying why not (a navigation shows no JSON).
pub(super) async fn oidc_begin(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match oidc_start(&s, &headers).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "single sign-on cannot start");
            let url = format!("/?signin_error={}", percent(&e.to_string()));
            redirect(&url).unwrap_or_else(|e| e.into_response())
        }
    }
}

async fn oidc_start(s: &AppState, headers: &HeaderMap) -> ApiResult<Response> {
    let Some(oidc) = &s.oidc else {
        return Err(ApiError::NotFound(
            "single sign-on is not configured (--oidc-issuer)".into(),
        ));
    };
    let begun = oidc.begin().await?;
    let ttl = people::oidc::LOGIN_TTL;
    let expires =
        store::now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    s.store
        .begin_oidc_login(
            &auth::hash_secret(&begun.state),
            &begun.nonce,
            &begun.verifier,
            expires,
        )
        .await?;
    let mut resp = redirect(&begun.url)?;
    resp.headers_mut().insert(
        header::SET_COOKIE,
        oidc_cookie(&begun.state, ttl.as_secs(), headers)?,
    );
    Ok(resp)
}

/// `GET /session/oidc/callback?code&state`: the provider sends the browser back here.
/// A failure goes back to the sign-in page with the reason.
pub(super) async fn oidc_callback(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let result = oidc_finish(&s, &headers, &q).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "single sign-on refused");
            let msg = e.to_string();
            let url = format!("/?signin_error={}", percent(&msg));
            redirect(&url).unwrap_or_else(|e| e.into_response())
        }
    };
    if let Ok(v) = oidc_cookie("", 0, &headers) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

async fn oidc_finish(
    s: &AppState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let Some(oidc) = &s.oidc else {
        return Err(ApiError::NotFound(
            "single sign-on is not configured".into(),
        ));
    };
    if let Some(err) = q.get("error") {
        let what = q.get("error_description").unwrap_or(err);
        return Err(ApiError::Unauthorized(format!(
            "the identity provider refused: {what}"
        )));
    }
    let (Some(code), Some(state)) = (q.get("code"), q.get("state")) else {
        return Err(ApiError::BadRequest(
            "the callback needs code and state parameters".into(),
        ));
    };
    let mine = auth::cookie(headers, OIDC_COOKIE).unwrap_or_default();
    if !auth::same_secret(mine, state) {
        return Err(ApiError::Unauthorized(
            "this sign-in was not started in this browser (or it took too long): start again"
                .into(),
        ));
    }
    let Some((nonce, verifier)) = s.store.take_oidc_login(&auth::hash_secret(state)).await? else {
        return Err(ApiError::Unauthorized(
            "this sign-in has expired or was used already: start again".into(),
        ));
    };
    let who = oidc.finish(code, &nonce, &verifier).await?;
    let user = s
        .store
        .oidc_user(&auth::new_id()?, &who)
        .await
        .map_err(|e| match e {
            store::StoreError::Conflict { message, .. } => ApiError::Forbidden(message),
            other => other.into(),
        })?;
    let how = oidc.options.display_name.clone();
    let json = open_session(s, headers, store::Principal::User(user), &how).await?;
    // The session's cookie, on a redirect to the UI (which reads the rest again).
    let mut resp = redirect("/")?;
    for v in json.headers().get_all(header::SET_COOKIE) {
        resp.headers_mut().append(header::SET_COOKIE, v.clone());
    }
    Ok(resp)
}

fn redirect(url: &str) -> ApiResult<Response> {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(url).map_err(|e| ApiError::Internal(e.into()))?,
    );
    Ok(resp)
}

/// Lax, not Strict: the provider's redirect back is a navigation from another site,
/// on which a Strict cookie is not sent.
fn oidc_cookie(value: &str, max_age: u64, headers: &HeaderMap) -> ApiResult<HeaderValue> {
    cookie_header(
        OIDC_COOKIE,
        value,
        "/api/v1/session/oidc",
        "Lax",
        max_age,
        headers,
    )
}

/// Percent-encodes a query parameter's value.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /users`.
pub(crate) async fn list_users(caller: Caller, State(s): State<AppState>) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, None)?;
    let users: Vec<UserInfo> = s
        .store
        .users()
        .await?
        .into_iter()
        .filter(|u| caller.covers(u.environments.as_deref()))
        .collect();
    Ok(Json(json!({"users": users})).into_response())
}

/// `POST /users`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPerson {
    login: String,
    name: Option<String>,
    email: Option<String>,
    /// viewer, editor, responder, ci or admin.
    role: String,
    environments: Option<Vec<String>>,
    /// A first password; none for people who sign in with the identity provider.
    password: Option<String>,
}

fn person_role(field: &str, role: &str) -> ApiResult<Role> {
    auth::person_role(role).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!(
                "\"{role}\" is not a role a person may have (viewer, editor, responder, ci, admin)"
            ),
        )
    })
}

fn display_name(field: &str, name: &str) -> ApiResult<String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 200 {
        return Err(ApiError::invalid(field, "must be 1 to 200 characters"));
    }
    Ok(n.to_owned())
}

pub(crate) async fn create_user(
    caller: Caller,
    State(s): State<AppState>,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, None)?;
    let b: NewPerson = body.fields()?;
    let login = people::normalize_login("login", &b.login)?;
    let role = person_role("role", &b.role)?;
    let name = display_name("name", b.name.as_deref().unwrap_or(&login))?;
    let email = match b.email {
        Some(e) if !e.contains('@') => {
            return Err(ApiError::invalid("email", "is not an e-mail address"));
        }
        other => other.map(|e| e.trim().to_lowercase()),
    };
    let envs = scope_of(&s, &caller, b.environments, "people").await?;
    let password_hash = match b.password {
        Some(p) => {
            people::check_password("password", &p)?;
            Some(people::hash_password(p).await?)
        }
        None => None,
    };
    let info = s
        .store
        .create_user(
            &caller.name,
            &auth::new_id()?,
            &NewUser {
                login,
                name,
                email,
                role: role.as_str().into(),
                environments: envs,
                password_hash,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"user": info}))).into_response())
}

/// `PATCH /users/{id}`: each field given is changed; `"environments": null` lifts the
/// limit, `"password": null` removes the password.
pub(crate) async fn update_user(
    caller: Caller,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::ManageTokens, None)?;
    let fields = body.object()?;
    for k in fields.keys() {
        if !matches!(
            k.as_str(),
            "name" | "role" | "environments" | "password" | "disabled"
        ) {
            return Err(ApiError::invalid(
                k,
                "is not a field of a person (name, role, environments, password, disabled)",
            ));
        }
    }
    let Some(before) = s.store.user(&id).await? else {
        return Err(ApiError::NotFound(format!("no person with id \"{id}\"")));
    };
    if !caller.covers(before.environments.as_deref()) {
        return Err(ApiError::Forbidden(
            "this token is limited to some environments: it may not change a person who reaches beyond them".into(),
        ));
    }
    let text = |k: &str| -> ApiResult<Option<&str>> {
        match fields.get(k) {
            None => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.as_str())),
            Some(_) => Err(ApiError::invalid(k, "must be a string")),
        }
    };
    let mut change = UserChange::default();
    if let Some(n) = text("name")? {
        change.name = Some(display_name("name", n)?);
    }
    if let Some(r) = text("role")? {
        change.role = Some(person_role("role", r)?.as_str().into());
    }
    match fields.get("environments") {
        None => {}
        Some(Value::Null) => {
            if !caller.covers(None) {
                return Err(ApiError::Forbidden(
                    "a limited admin cannot give access to every environment".into(),
                ));
            }
            change.environments = Some(None);
        }
        Some(v) => {
            let list: Vec<String> = serde_json::from_value(v.clone()).map_err(|_| {
                ApiError::invalid(
                    "environments",
                    "must be a list of environment keys, or null",
                )
            })?;
            change.environments = Some(scope_of(&s, &caller, Some(list), "people").await?);
        }
    }
    match fields.get("password") {
        None => {}
        Some(Value::Null) => change.password_hash = Some(None),
        Some(Value::String(p)) => {
            people::check_password("password", p)?;
            change.password_hash = Some(Some(people::hash_password(p.clone()).await?));
        }
        Some(_) => return Err(ApiError::invalid("password", "must be a string or null")),
    }
    match fields.get("disabled") {
        None => {}
        Some(Value::Bool(d)) => {
            if *d && caller.user_id.as_deref() == Some(id.as_str()) {
                return Err(ApiError::invalid(
                    "disabled",
                    "you cannot disable your own account: ask another admin",
                ));
            }
            change.disabled = Some(*d);
        }
        Some(_) => return Err(ApiError::invalid("disabled", "must be true or false")),
    }
    let after = s.store.update_user(&caller.name, &id, &change).await?;
    if change.disabled == Some(true) {
        s.hub
            .revoke(crate::hub::Revoked::Token(format!("user:{id}")));
    }
    Ok(Json(json!({"user": after})).into_response())
}

/// `POST /session/password` `{"current": "...", "new": "..."}`: a person changes their
/// own password.
pub(crate) async fn change_password(
    caller: Caller,
    State(s): State<AppState>,
    body: Body,
) -> ApiResult<Response> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Change {
        current: String,
        new: String,
    }
    let Some(id) = &caller.user_id else {
        return Err(ApiError::BadRequest(
            "only a person signed in has a password to change".into(),
        ));
    };
    let b: Change = body.fields()?;
    let found = s.store.password_login(&caller.name).await?;
    let Some(hash) = found.and_then(|f| f.hash) else {
        return Err(ApiError::BadRequest(
            "your account has no password: you sign in with the identity provider".into(),
        ));
    };
    if !people::verify_password(b.current, Some(hash)).await? {
        return Err(ApiError::invalid("current", "is not your current password"));
    }
    people::check_password("new", &b.new)?;
    let change = UserChange {
        password_hash: Some(Some(people::hash_password(b.new).await?)),
        ..UserChange::default()
    };
    s.store.update_user(&caller.name, id, &change).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
