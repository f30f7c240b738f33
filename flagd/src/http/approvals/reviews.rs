//! The reviews of break-glass changes: listed for approvers, acknowledged by a person
//! other than who made the change.

use super::super::*;

/// `GET …/reviews[?open=true]`: break-glass changes for approvers to acknowledge.
pub(crate) async fn list_reviews(
    caller: Caller,
    State(s): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.check(Perm::Read, Some(&env))?;
    s.store.environment(&env).await?;
    let open = query_bool(&q, "open")?;
    Ok(Json(json!({"reviews": s.store.reviews(&env, open).await?})).into_response())
}

/// `POST …/reviews/{id}/acknowledge` `{"note"?}`: by a person other than who made it.
pub(crate) async fn acknowledge_review(
    caller: Caller,
    State(s): State<AppState>,
    Path((env, id)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    caller.check(Perm::Approve, Some(&env))?;
    let Some(person) = caller.person(&s.store).await? else {
        return Err(ApiError::Forbidden(
            "reviews are acknowledged by people: sign in with your own account (or use a token you created)".into(),
        ));
    };
    let note = match body.object()?.get("note") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) if n.chars().count() <= 2000 => Some(n.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "note",
                "must be a string of at most 2000 characters",
            ));
        }
    };
    if s.store
        .review(&env, &id)
        .await?
        .is_some_and(|r| r.actor == person)
    {
        return Err(ApiError::Forbidden(
            "you made this change: someone else acknowledges its review".into(),
        ));
    }
    let r = s
        .store
        .acknowledge_review(&env, &id, &person, note.as_deref())
        .await?;
    Ok(Json(json!({"review": r})).into_response())
}
