//! Approvals: an environment's approval policy, change requests (propose, edit,
//! approve, reject, comment, apply, withdraw) and the reviews of break-glass changes.
//! What may be written without approval is decided by the store at commit; this
//! module says who may review and applies what was approved.

mod apply;
mod reviews;

use super::plans::perm_of;
use super::*;
use crate::store::{ApprovalPolicy, ChangeRequest, MAX_APPROVALS, REQUEST_STATES, Verdict};
use apply::{apply, check_change, stale_check};
pub(crate) use reviews::*;

/// `GET …/approval-policy`.
pub(crate) async fn get_approval_policy(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let e = s.store.environment(&env).await?;
    let policy = ApprovalPolicy {
        protected: e.protected,
        approvals: e.approvals,
    };
    Ok(Json(json!({"policy": policy})).into_response())
}

/// `PUT …/approval-policy` `{"protected": true, "approvals": 2}`.
pub(crate) async fn put_approval_policy(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::ManageEnvironments, Some(&env))?;
    let policy: ApprovalPolicy = body.fields()?;
    if policy.approvals == 0 || policy.approvals > MAX_APPROVALS {
        return Err(ApiError::invalid(
            "approvals",
            format!("must be 1 to {MAX_APPROVALS}"),
        ));
    }
    s.store.environment(&env).await?;
    let p = s
        .store
        .set_approval_policy(&caller.name, &env, policy)
        .await?;
    Ok(Json(json!({"policy": p})).into_response())
}

/// Who a request is by: the person behind the caller, else the token's name.
async fn author_of(s: &AppState, caller: &Caller) -> ApiResult<String> {
    Ok(caller
        .person(&s.store)
        .await?
        .unwrap_or_else(|| caller.name.clone()))
}

/// The permission a proposed change needs, and a refusal of a change of no known kind.
pub(super) fn perm_of_change(change: &Value) -> ApiResult<(Perm, &'static str)> {
    let obj = change.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
        ApiError::invalid(
            "change",
            "must be an object with one of flags, document, plan or schedule",
        )
    })?;
    Ok(match obj.keys().next().map(String::as_str) {
        Some("flags") => (Perm::EditFlags, "flags"),
        Some("document") => (Perm::Import, "document"),
        Some("plan") => (Perm::Rollout, "plan"),
        Some("schedule") => {
            let action = change["schedule"]["action"].as_str().unwrap_or_default();
            (perm_of(action), "schedule")
        }
        Some(other) => {
            return Err(ApiError::invalid(
                &format!("change.{other}"),
                "is not a kind of change (flags, document, plan, schedule)",
            ));
        }
        None => return Err(ApiError::invalid("change", "is empty")),
    })
}

fn title_of(v: Option<&Value>) -> ApiResult<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) if !t.trim().is_empty() && t.chars().count() <= 200 => {
            Ok(Some(t.trim().to_owned()))
        }
        Some(_) => Err(ApiError::invalid("title", "must be 1 to 200 characters")),
    }
}

/// `POST …/change-requests` `{"title", "change", "autoApply"?}`: proposes a change,
/// based on the head (or `If-Match`).
pub(crate) async fn create_request(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let o = body.object()?;
    for k in o.keys() {
        if !matches!(k.as_str(), "title" | "change" | "autoApply") {
            return Err(ApiError::invalid(
                k,
                "is not a field of a change request (title, change, autoApply)",
            ));
        }
    }
    let change = o.get("change").cloned().unwrap_or(Value::Null);
    let (perm, _) = perm_of_change(&change)?;
    caller.check(perm, Some(&env))?;
    let title = title_of(o.get("title"))?
        .ok_or_else(|| ApiError::invalid("title", "is required: what the change is, in a line"))?;
    let auto_apply = match o.get("autoApply") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("autoApply", "must be true or false")),
    };
    let e = s.store.environment(&env).await?;
    let base = match if_match(&headers)? {
        Some(v) if v != e.version => {
            return Err(ApiError::Conflict {
                message: format!(
                    "If-Match is version {v}, but the head of \"{env}\" is {}",
                    e.version
                ),
                current_version: Some(e.version),
            });
        }
        _ => e.version,
    };
    check_change(&s, &env, &change).await?;
    let author = author_of(&s, &caller).await?;
    let id = auth::new_id()?;
    let r = s
        .store
        .create_request(&store::NewRequest {
            id: &id,
            env: &env,
            title: &title,
            change: &change,
            base_version: base,
            auto_apply,
            author: &author,
        })
        .await?;
    announce(&s, &r, "proposed", &format!("{author} proposes: {title}")).await;
    Ok((StatusCode::CREATED, Json(json!({"request": r}))).into_response())
}

/// Tells the environment's channels (event `approval`); a channel down stops nothing.
pub(super) async fn announce(s: &AppState, r: &ChangeRequest, what: &str, text: &str) {
    let title = format!("Change request {} {what}", r.id);
    if let Err(e) = s
        .notifier
        .announce("approval", &r.environment, &title, text, None)
        .await
    {
        tracing::warn!(environment = %r.environment, request = %r.id, error = %e, "cannot queue the notification of a change request");
    }
}

/// `GET …/change-requests[?state=open]`.
pub(crate) async fn list_requests(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let state = q.get("state").map(String::as_str);
    if let Some(st) = state
        && !REQUEST_STATES.contains(&st)
    {
        return Err(ApiError::BadRequest(format!(
            "state must be one of {}",
            REQUEST_STATES.join(", ")
        )));
    }
    let list = s.store.requests(&env, state).await?;
    Ok(Json(json!({"requests": list})).into_response())
}

/// `GET …/change-requests/{id}`: the request, its history, and its diff against the
/// version it is based on.
pub(crate) async fn get_request(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    let r = s.store.request(&env, &id).await?;
    let diff = diff_of(&s, &r).await?;
    let head = s.store.environment(&env).await?.version;
    Ok(Json(json!({"request": r, "diff": diff, "headVersion": head, "baseMoved": head != r.base_version && r.state == "open"})).into_response())
}

/// Each flag the change touches, before (at the base) and after.
async fn diff_of(s: &AppState, r: &ChangeRequest) -> ApiResult<Value> {
    let (_, base) = s.store.items(&r.environment, Some(r.base_version)).await?;
    let before = |k: &str| {
        base.get(&(ItemKind::Flag, k.to_owned()))
            .map_or(Value::Null, |i| i.definition.clone())
    };
    let mut out = Vec::new();
    if let Some(flags) = r.change.get("flags").and_then(Value::as_object) {
        for (k, after) in flags {
            out.push(json!({"key": k, "before": before(k), "after": after}));
        }
    } else if let Some(doc) = r.change.get("document") {
        let proposed = doc
            .get("flags")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut keys: Vec<String> = base
            .keys()
            .filter(|(kind, _)| *kind == ItemKind::Flag)
            .map(|(_, k)| k.clone())
            .chain(proposed.keys().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let (b, a) = (before(&k), proposed.get(&k).cloned().unwrap_or(Value::Null));
            if b != a {
                out.push(json!({"key": k, "before": b, "after": a}));
            }
        }
    }
    Ok(Value::Array(out))
}

/// Whether the caller proposed this request.
async fn is_author(s: &AppState, caller: &Caller, r: &ChangeRequest) -> ApiResult<bool> {
    Ok(author_of(s, caller).await? == r.author || caller.name == r.author)
}

/// `PUT …/change-requests/{id}` `{"change", "title"?}`: the author replaces the change,
/// based on the head now; the approvals given count no more.
pub(crate) async fn edit_request(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    let o = body.object()?;
    for k in o.keys() {
        if !matches!(k.as_str(), "title" | "change") {
            return Err(ApiError::invalid(
                k,
                "is not a field of a change request's edit (title, change)",
            ));
        }
    }
    caller.check(Perm::Read, Some(&env))?;
    let r = s.store.request(&env, &id).await?;
    if !is_author(&s, &caller, &r).await? {
        return Err(ApiError::Forbidden(format!(
            "only its author ({}) edits change request {id}",
            r.author
        )));
    }
    let change = o.get("change").cloned().unwrap_or_else(|| r.change.clone());
    let (perm, _) = perm_of_change(&change)?;
    caller.check(perm, Some(&env))?;
    let title = title_of(o.get("title"))?;
    check_change(&s, &env, &change).await?;
    let head = s.store.environment(&env).await?.version;
    let actor = author_of(&s, &caller).await?;
    let r = s
        .store
        .edit_request(&env, &id, &actor, title.as_deref(), &change, head)
        .await?;
    Ok(Json(json!({"request": r})).into_response())
}

/// `POST …/change-requests/{id}/{approve|reject|comment|apply|withdraw}`, with
/// `{"comment": "..."}` (required to reject or comment).
pub(crate) async fn act_on_request(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id, action)): Path<(String, String, String)>,
    body: Body,
) -> ApiResult<Response> {
    let comment = match body.object()?.get("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if c.chars().count() <= 2000 => {
            Some(c.trim().to_owned()).filter(|c| !c.is_empty())
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "comment",
                "must be a string of at most 2000 characters",
            ));
        }
    };
    match action.as_str() {
        "approve" | "reject" | "comment" => {
            caller.check(Perm::Approve, Some(&env))?;
            let Some(person) = caller.person(&s.store).await? else {
                return Err(ApiError::Forbidden(
                    "change requests are reviewed by people: sign in with your own account (or use a token you created)".into(),
                ));
            };
            let r = s.store.request(&env, &id).await?;
            let verdict = match action.as_str() {
                "approve" => Verdict::Approve,
                "reject" => Verdict::Reject,
                _ => Verdict::Comment,
            };
            if verdict != Verdict::Comment && person == r.author {
                return Err(ApiError::Forbidden(format!(
                    "you proposed change request {id}: its approvals must come from other people"
                )));
            }
            if verdict != Verdict::Approve && comment.is_none() {
                return Err(ApiError::invalid(
                    "comment",
                    format!("is required to {action}"),
                ));
            }
            if verdict == Verdict::Approve && r.state == "open" {
                stale_check(&s, &r).await?;
            }
            let r = s
                .store
                .review_request(&env, &id, &person, verdict, comment.as_deref())
                .await?;
            if verdict == Verdict::Reject {
                announce(
                    &s,
                    &r,
                    "rejected",
                    &format!("{person}: {}", comment.as_deref().unwrap_or_default()),
                )
                .await;
            }
            let ready = verdict == Verdict::Approve
                && r.auto_apply
                && r.approved_by.len() as u64 >= r.approvals_required;
            if ready {
                return apply(&s, r).await;
            }
            if verdict == Verdict::Approve && r.approved_by.len() as u64 >= r.approvals_required {
                announce(
                    &s,
                    &r,
                    "approved",
                    &format!("approved by {}: {}", r.approved_by.join(", "), r.title),
                )
                .await;
            }
            Ok(Json(json!({"request": r})).into_response())
        }
        "apply" => {
            caller.check(Perm::Read, Some(&env))?;
            let r = s.store.request(&env, &id).await?;
            if !is_author(&s, &caller, &r).await? {
                return Err(ApiError::Forbidden(format!(
                    "only its author ({}) applies change request {id} (or it applies itself when approved)",
                    r.author
                )));
            }
            let (perm, _) = perm_of_change(&r.change)?;
            caller.check(perm, Some(&env))?;
            apply(&s, r).await
        }
        "withdraw" => {
            caller.check(Perm::Read, Some(&env))?;
            let r = s.store.request(&env, &id).await?;
            if !is_author(&s, &caller, &r).await? {
                return Err(ApiError::Forbidden(format!(
                    "only its author ({}) withdraws change request {id}",
                    r.author
                )));
            }
            let why = comment.unwrap_or_else(|| "withdrawn by its author".into());
            let r = s
                .store
                .close_request(&env, &id, &r.author, "withdrawn", &why)
                .await?;
            Ok(Json(json!({"request": r})).into_response())
        }
        other => Err(ApiError::NotFound(format!(
            "no action \"{other}\" on a change request (approve, reject, comment, apply, withdraw)"
        ))),
    }
}
