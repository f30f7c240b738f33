//! Break-glass: what may be written to a protected environment without approval (the
//! safe direction only: a kill switch, a revert of the whole set, an undo of the head),
//! decided here at commit whatever route asked, and the reviews such changes open for
//! someone else to acknowledge.

use super::approvals::add_event;
use super::*;

/// A change made to a protected environment without approval, for approvers to
/// acknowledge after the incident.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    /// Identifier.
    pub id: String,
    /// The environment.
    pub environment: String,
    /// The version it made (its id is that number).
    pub version: u64,
    /// Who made it.
    pub actor: String,
    /// The audit action (`flag.disable`, `flagset.revert`, `flagset.undo`, ...).
    pub action: String,
    /// What it acted on.
    pub target: String,
    /// The reason given.
    pub reason: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_at: Option<String>,
    /// What they noted.
    pub note: Option<String>,
}

fn review_of(r: &AnyRow) -> StoreResult<Review> {
    Ok(Review {
        id: r.try_get("id")?,
        environment: r.try_get("env")?,
        version: to_u64(r.try_get("version")?),
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        reason: r.try_get("reason")?,
        created_at: rfc3339(r.try_get("created_at")?),
        acknowledged_by: r.try_get("acknowledged_by")?,
        acknowledged_at: r.try_get::<Option<i64>, _>("acknowledged_at")?.map(rfc3339),
        note: r.try_get("note")?,
    })
}

impl Store {
    /// An environment's break-glass reviews, newest first (only the unacknowledged).
    pub async fn reviews(&self, env: &str, open_only: bool) -> StoreResult<Vec<Review>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query(
            "SELECT * FROM reviews WHERE env = $1 AND ($2 = 0 OR acknowledged_at IS NULL) ORDER BY created_at DESC, id LIMIT 200",
        )
        .bind(env)
        .bind(i64::from(open_only))
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(review_of).collect()
    }

    /// One review.
    pub async fn review(&self, env: &str, id: &str) -> StoreResult<Option<Review>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM reviews WHERE env = $1 AND id = $2")
            .bind(env)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(review_of).transpose()
    }

    /// Acknowledges a review (audited); not by its own author.
    pub async fn acknowledge_review(
        &self,
        env: &str,
        id: &str,
        actor: &str,
        note: Option<&str>,
    ) -> StoreResult<Review> {
        let mut tx = self.begin_tx().await?;
        let row = sqlx::query("SELECT * FROM reviews WHERE env = $1 AND id = $2")
            .bind(env)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no review \"{id}\" in \"{env}\"")))?;
        let before = review_of(&row)?;
        if before.acknowledged_at.is_some() {
            return Err(StoreError::Conflict {
                message: format!("review {id} was acknowledged already"),
                current_version: None,
            });
        }
        sqlx::query("UPDATE reviews SET acknowledged_by = $1, acknowledged_at = $2, note = $3 WHERE id = $4")
            .bind(actor)
            .bind(now_ms())
            .bind(note)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let after = review_of(
            &sqlx::query("SELECT * FROM reviews WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?,
        )?;
        audit(
            &mut tx,
            &AuditRecord {
                actor: actor.into(),
                action: "review.acknowledge".into(),
                env: Some(env.into()),
                target: id.into(),
                reason: note.map(Into::into),
                before: None,
                after: Some(serde_json::json!({"version": after.version, "actor": after.actor, "action": after.action})),
            },
            Some(after.version),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }
}

/// Whether a change may be written to a protected environment without approval, and
/// as what: the safe direction only.
fn break_glass(kind: ChangeKind, changes: &[Change], action: &str, undoes_head: bool) -> bool {
    match kind {
        // A kill switch, never an enable.
        ChangeKind::Toggle => changes.iter().all(|(_, _, _, after)| {
            after
                .as_ref()
                .and_then(|d| d.get("state"))
                .and_then(Value::as_str)
                == Some("DISABLED")
        }),
        ChangeKind::AutoDisable | ChangeKind::AutoRevert => true,
        // The whole set back to a version that was live (every version was the head
        // once); one flag's restore makes a set that never was, and is reviewed first.
        ChangeKind::Revert => action == "flagset.revert",
        // Undoing the head goes back to the version before it, which was live.
        ChangeKind::Undo => undoes_head,
        _ => false,
    }
}

impl WriteTx<'_> {
    /// This change applies an approved change request (its revision), marked applied in
    /// the change's own transaction.
    pub fn record_request(&mut self, id: &str, revision: u64) {
        self.request = Some((id.to_owned(), revision));
    }

    /// This change undoes version `n` (break-glass when `n` is the head).
    pub fn undoing(&mut self, n: u64) {
        self.undoes = Some(n);
    }

    /// Refuses a change to a protected environment that was not approved and is not
    /// break-glass; says whether it is break-glass (a review is then opened).
    pub(super) fn authorize(
        &self,
        kind: ChangeKind,
        action: &str,
        reason: Option<&str>,
    ) -> StoreResult<bool> {
        if !self.env.protected || self.request.is_some() {
            return Ok(false);
        }
        // A plan is approved once, when it is created; its steps then run, as do the
        // changes scheduled through an approved request.
        if self.plan.as_ref().is_some_and(|m| m.create.is_some()) {
            return Err(self.approval_required("a release plan"));
        }
        if self.plan.is_some() || self.schedule.is_some() {
            return Ok(false);
        }
        let undoes_head = self.undoes == Some(self.env.version);
        if !break_glass(kind, &self.changes, action, undoes_head) {
            return Err(self.approval_required("this change"));
        }
        if reason.is_none_or(|r| r.trim().is_empty()) {
            return Err(StoreError::invalid(
                "reason",
                format!(
                    "is required: a change to protected environment \"{}\" without approval (break-glass) must say why (the X-Change-Reason header, or \"reason\" in the body)",
                    self.env.key
                ),
            ));
        }
        Ok(true)
    }

    /// The refusal of an unapproved change to a protected environment.
    pub(super) fn approval_required(&self, what: &str) -> StoreError {
        StoreError::ApprovalRequired(format!(
            "environment \"{}\" is protected: {what} needs {} approval{} (open a change request: POST /api/v1/environments/{}/change-requests). Without approval only a kill switch, a revert of the whole set to an earlier version and an undo of the last version are allowed",
            self.env.key,
            self.env.approvals,
            if self.env.approvals == 1 { "" } else { "s" },
            self.env.key
        ))
    }

    /// Opens the review of a break-glass change, and marks an applied request.
    pub(super) async fn write_approval(
        &mut self,
        version: Option<i64>,
        break_glass: Option<(&str, &str, &str, &str)>,
    ) -> StoreResult<()> {
        if let (Some(v), Some((actor, action, target, reason))) = (version, break_glass) {
            sqlx::query("INSERT INTO reviews (id, env, version, actor, action, target, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(v.to_string())
                .bind(&self.env.key)
                .bind(v)
                .bind(actor)
                .bind(action)
                .bind(target)
                .bind(reason)
                .bind(now_ms())
                .execute(&mut *self.tx)
                .await?;
        }
        let Some((id, revision)) = self.request.take() else {
            return Ok(());
        };
        let n = sqlx::query("UPDATE change_requests SET state = 'applied', applied_version = $1, updated_at = $2 WHERE env = $3 AND id = $4 AND revision = $5 AND state = 'open'")
            .bind(version)
            .bind(now_ms())
            .bind(&self.env.key)
            .bind(&id)
            .bind(to_i64(revision))
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        if n != 1 {
            return Err(StoreError::Conflict {
                message: format!("change request {id} changed or was applied meanwhile"),
                current_version: None,
            });
        }
        let detail = match version {
            Some(v) => format!("applied as version {v}"),
            None => "applied".to_owned(),
        };
        add_event(
            &mut self.tx,
            &id,
            "flagd",
            "applied",
            revision,
            Some(&detail),
        )
        .await
    }
}
