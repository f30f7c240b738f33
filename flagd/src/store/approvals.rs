//! Approvals: protected environments, and change requests with their reviews. What
//! may be written to a protected environment without approval, and the break-glass
//! reviews such changes open, are in `reviews.rs`.

use super::*;

/// The most approvals an environment may require.
pub const MAX_APPROVALS: u64 = 10;

/// A change request's states.
pub const REQUEST_STATES: &[&str] = &["open", "applied", "rejected", "stale", "withdrawn"];

/// What an environment asks of changes.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// Whether changes need approvals.
    pub protected: bool,
    /// How many, from people other than the author.
    pub approvals: u64,
}

/// A proposed change, its state and who approved its current revision.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRequest {
    /// Identifier.
    pub id: String,
    /// The environment.
    pub environment: String,
    /// A one-line summary.
    pub title: String,
    /// The change: `{"flags": {...}}`, `{"document": {...}}`, `{"plan": {...}}` or
    /// `{"schedule": {...}}`.
    pub change: Value,
    /// The version of the set it was based on: it applies only onto that head.
    pub base_version: u64,
    /// Its edits so far (an approval counts for the revision it was given on).
    pub revision: u64,
    /// open, applied, rejected, stale or withdrawn.
    pub state: String,
    /// Applied as soon as it has its approvals.
    pub auto_apply: bool,
    /// Who proposed it (a person's login).
    pub author: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// The version it was applied as.
    pub applied_version: Option<u64>,
    /// Who approved the current revision.
    pub approved_by: Vec<String>,
    /// How many approvals it needs.
    pub approvals_required: u64,
    /// What happened to it, oldest first (on a request read alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<RequestEvent>>,
}

/// One thing that happened to a change request.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestEvent {
    /// When (RFC 3339).
    pub at: String,
    /// Who.
    pub actor: String,
    /// created, edited, approved, rejected, commented, applied, stale, withdrawn.
    pub action: String,
    /// The revision it concerned.
    pub revision: u64,
    /// A comment, or why.
    pub comment: Option<String>,
}

async fn request_of(
    conn: &mut AnyConnection,
    r: &AnyRow,
    required: u64,
) -> StoreResult<ChangeRequest> {
    let id: String = r.try_get("id")?;
    let revision: i64 = r.try_get("revision")?;
    let approvers = sqlx::query(
        "SELECT DISTINCT actor FROM change_request_events WHERE request_id = $1 AND action = 'approved' AND revision = $2 ORDER BY actor",
    )
    .bind(&id)
    .bind(revision)
    .fetch_all(&mut *conn)
    .await?;
    let approved_by = approvers
        .iter()
        .map(|a| a.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    request_from(r, required, approved_by)
}

/// A request's row, with who approved its current revision.
fn request_from(r: &AnyRow, required: u64, approved_by: Vec<String>) -> StoreResult<ChangeRequest> {
    let id: String = r.try_get("id")?;
    let revision: i64 = r.try_get("revision")?;
    let change: String = r.try_get("change")?;
    Ok(ChangeRequest {
        id,
        environment: r.try_get("env")?,
        title: r.try_get("title")?,
        change: serde_json::from_str(&change).map_err(|e| StoreError::Internal(e.into()))?,
        base_version: to_u64(r.try_get("base_version")?),
        revision: to_u64(revision),
        state: r.try_get("state")?,
        auto_apply: r.try_get::<i64, _>("auto_apply")? != 0,
        author: r.try_get("author")?,
        created_at: rfc3339(r.try_get("created_at")?),
        updated_at: rfc3339(r.try_get("updated_at")?),
        applied_version: r.try_get::<Option<i64>, _>("applied_version")?.map(to_u64),
        approved_by,
        approvals_required: required,
        events: None,
    })
}

pub(super) async fn add_event(
    tx: &mut Tx,
    id: &str,
    actor: &str,
    action: &str,
    revision: u64,
    comment: Option<&str>,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO change_request_events (request_id, at, actor, action, revision, comment) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(now_ms())
        .bind(actor)
        .bind(action)
        .bind(to_i64(revision))
        .bind(comment)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn request_audit(
    tx: &mut Tx,
    actor: &str,
    action: &str,
    r: &ChangeRequest,
    reason: Option<&str>,
) -> StoreResult<()> {
    audit(
        tx,
        &AuditRecord {
            actor: actor.into(),
            action: format!("request.{action}"),
            env: Some(r.environment.clone()),
            target: r.id.clone(),
            reason: reason.map(Into::into),
            before: None,
            after: Some(serde_json::json!({"title": r.title, "revision": r.revision, "baseVersion": r.base_version, "state": r.state})),
        },
        None,
    )
    .await
}

/// A change request to open.
#[derive(Clone, Copy, Debug)]
pub struct NewRequest<'a> {
    /// Its identifier.
    pub id: &'a str,
    /// The environment.
    pub env: &'a str,
    /// A one-line summary.
    pub title: &'a str,
    /// The change.
    pub change: &'a Value,
    /// The version it is based on.
    pub base_version: u64,
    /// Applied as soon as approved.
    pub auto_apply: bool,
    /// Who proposes it.
    pub author: &'a str,
}

/// What a review of a change request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Approves its current revision.
    Approve,
    /// Rejects it (its author may edit it, which opens it again).
    Reject,
    /// Only comments.
    Comment,
}

impl Store {
    /// Sets an environment's approval policy (audited).
    pub async fn set_approval_policy(
        &self,
        actor: &str,
        env: &str,
        policy: ApprovalPolicy,
    ) -> StoreResult<ApprovalPolicy> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let before = env_in(&mut tx, env).await?;
        sqlx::query("UPDATE environments SET protected = $1, approvals = $2 WHERE key = $3")
            .bind(i64::from(policy.protected))
            .bind(to_i64(policy.approvals))
            .bind(env)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            &AuditRecord {
                actor: actor.into(),
                action: "environment.approvals".into(),
                env: Some(env.into()),
                target: env.into(),
                reason: None,
                before: Some(serde_json::json!({"protected": before.protected, "approvals": before.approvals})),
                after: Some(serde_json::json!({"protected": policy.protected, "approvals": policy.approvals})),
            },
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(policy)
    }

    /// Opens a change request (audited).
    pub async fn create_request(&self, new: &NewRequest<'_>) -> StoreResult<ChangeRequest> {
        let NewRequest {
            id,
            env,
            title,
            change,
            base_version,
            auto_apply,
            author,
        } = *new;
        let mut tx = self.begin_tx().await?;
        let e = env_in(&mut tx, env).await?;
        let now = now_ms();
        sqlx::query("INSERT INTO change_requests (id, env, title, change, base_version, revision, state, auto_apply, author, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, 'open', $6, $7, $8, $8)")
            .bind(id)
            .bind(env)
            .bind(title)
            .bind(change.to_string())
            .bind(to_i64(base_version))
            .bind(i64::from(auto_apply))
            .bind(author)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        add_event(&mut tx, id, author, "created", 1, None).await?;
        let r = request_in(&mut tx, env, id, e.approvals).await?;
        request_audit(&mut tx, author, "create", &r, Some(title)).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// A change request, with its events.
    pub async fn request(&self, env: &str, id: &str) -> StoreResult<ChangeRequest> {
        // The environment first: holding a connection while asking for another can
        // exhaust the pool under concurrent reads.
        let e = self.environment(env).await?;
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM change_requests WHERE env = $1 AND id = $2")
            .bind(env)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("no change request \"{id}\" in \"{env}\""))
            })?;
        let mut r = request_of(&mut conn, &row, e.approvals).await?;
        let events =
            sqlx::query("SELECT * FROM change_request_events WHERE request_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&mut *conn)
                .await?;
        r.events = Some(
            events
                .iter()
                .map(|x| {
                    Ok(RequestEvent {
                        at: rfc3339(x.try_get("at")?),
                        actor: x.try_get("actor")?,
                        action: x.try_get("action")?,
                        revision: to_u64(x.try_get("revision")?),
                        comment: x.try_get("comment")?,
                    })
                })
                .collect::<StoreResult<_>>()?,
        );
        Ok(r)
    }

    /// An environment's change requests, newest first, of one state or all.
    pub async fn requests(
        &self,
        env: &str,
        state: Option<&str>,
    ) -> StoreResult<Vec<ChangeRequest>> {
        let e = self.environment(env).await?;
        let mut conn = self.read().await?;
        let rows = sqlx::query(
            "SELECT * FROM change_requests WHERE env = $1 AND ($2 = '' OR state = $2) ORDER BY created_at DESC, id LIMIT 200",
        )
        .bind(env)
        .bind(state.unwrap_or(""))
        .fetch_all(&mut *conn)
        .await?;
        // Every listed request's approvers of its current revision, in one query.
        let approvals = sqlx::query(
            "SELECT DISTINCT e.request_id, e.actor FROM change_request_events e \
             JOIN change_requests r ON r.id = e.request_id AND r.revision = e.revision \
             WHERE r.env = $1 AND e.action = 'approved' ORDER BY e.request_id, e.actor",
        )
        .bind(env)
        .fetch_all(&mut *conn)
        .await?;
        let mut by_request: HashMap<String, Vec<String>> = HashMap::new();
        for a in &approvals {
            by_request
                .entry(a.try_get("request_id")?)
                .or_default()
                .push(a.try_get("actor")?);
        }
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                request_from(r, e.approvals, by_request.remove(&id).unwrap_or_default())
            })
            .collect()
    }

    /// Replaces a request's change (a new revision, based on `base_version`): its
    /// approvals are for the old revision and count no more; a rejected or stale request
    /// is open again.
    pub async fn edit_request(
        &self,
        env: &str,
        id: &str,
        actor: &str,
        title: Option<&str>,
        change: &Value,
        base_version: u64,
    ) -> StoreResult<ChangeRequest> {
        let mut tx = self.begin_tx().await?;
        let e = env_in(&mut tx, env).await?;
        let before = request_in(&mut tx, env, id, e.approvals).await?;
        if matches!(before.state.as_str(), "applied" | "withdrawn") {
            return Err(StoreError::Conflict {
                message: format!(
                    "change request {id} is {}: it cannot be edited",
                    before.state
                ),
                current_version: None,
            });
        }
        let revision = before.revision + 1;
        sqlx::query("UPDATE change_requests SET title = $1, change = $2, base_version = $3, revision = $4, state = 'open', updated_at = $5 WHERE id = $6")
            .bind(title.unwrap_or(&before.title))
            .bind(change.to_string())
            .bind(to_i64(base_version))
            .bind(to_i64(revision))
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        add_event(&mut tx, id, actor, "edited", revision, None).await?;
        let r = request_in(&mut tx, env, id, e.approvals).await?;
        request_audit(&mut tx, actor, "edit", &r, None).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Records a review of an open request's current revision (audited). Whether the
    /// reviewer may (a person, not its author) is the caller's to check.
    pub async fn review_request(
        &self,
        env: &str,
        id: &str,
        actor: &str,
        verdict: Verdict,
        comment: Option<&str>,
    ) -> StoreResult<ChangeRequest> {
        let mut tx = self.begin_tx().await?;
        let e = env_in(&mut tx, env).await?;
        let before = request_in(&mut tx, env, id, e.approvals).await?;
        if verdict != Verdict::Comment && before.state != "open" {
            return Err(StoreError::Conflict {
                message: format!(
                    "change request {id} is {}: only an open request is approved or rejected{}",
                    before.state,
                    if before.state == "stale" {
                        " (its author must update it onto the current version)"
                    } else {
                        ""
                    }
                ),
                current_version: None,
            });
        }
        if verdict == Verdict::Approve && before.approved_by.iter().any(|a| a == actor) {
            return Err(StoreError::Conflict {
                message: format!(
                    "you approved revision {} of change request {id} already",
                    before.revision
                ),
                current_version: None,
            });
        }
        let (action, audited, state) = match verdict {
            Verdict::Approve => ("approved", "approve", None),
            Verdict::Reject => ("rejected", "reject", Some("rejected")),
            Verdict::Comment => ("commented", "comment", None),
        };
        add_event(&mut tx, id, actor, action, before.revision, comment).await?;
        if let Some(st) = state {
            sqlx::query("UPDATE change_requests SET state = $1, updated_at = $2 WHERE id = $3")
                .bind(st)
                .bind(now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let r = request_in(&mut tx, env, id, e.approvals).await?;
        request_audit(&mut tx, actor, audited, &r, comment).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Marks an open request stale (its base moved) or withdrawn (by its author).
    pub async fn close_request(
        &self,
        env: &str,
        id: &str,
        actor: &str,
        state: &str,
        why: &str,
    ) -> StoreResult<ChangeRequest> {
        let mut tx = self.begin_tx().await?;
        let e = env_in(&mut tx, env).await?;
        let before = request_in(&mut tx, env, id, e.approvals).await?;
        if !matches!(before.state.as_str(), "open" | "rejected" | "stale") {
            return Err(StoreError::Conflict {
                message: format!("change request {id} is {} already", before.state),
                current_version: None,
            });
        }
        sqlx::query("UPDATE change_requests SET state = $1, updated_at = $2 WHERE id = $3")
            .bind(state)
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        add_event(&mut tx, id, actor, state, before.revision, Some(why)).await?;
        let r = request_in(&mut tx, env, id, e.approvals).await?;
        request_audit(
            &mut tx,
            actor,
            if state == "stale" {
                "stale"
            } else {
                "withdraw"
            },
            &r,
            Some(why),
        )
        .await?;
        tx.commit().await?;
        Ok(r)
    }
}

pub(super) async fn env_in(tx: &mut Tx, env: &str) -> StoreResult<Environment> {
    let row = sqlx::query("SELECT * FROM environments WHERE key = $1")
        .bind(env)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no environment \"{env}\"")))?;
    env_of(&row)
}

async fn request_in(tx: &mut Tx, env: &str, id: &str, required: u64) -> StoreResult<ChangeRequest> {
    let row = sqlx::query("SELECT * FROM change_requests WHERE env = $1 AND id = $2")
        .bind(env)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no change request \"{id}\" in \"{env}\"")))?;
    request_of(&mut *tx, &row, required).await
}
