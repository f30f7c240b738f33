//! What alerts may do to an environment (its policy), what each firing did (its
//! episodes), and the history questions "last known good" needs.

use super::*;

/// The actions an alert can ask for.
pub const ALERT_ACTIONS: [&str; 2] = ["disable", "revert"];

/// How far before an alert began "last known good" looks by default: ten minutes.
pub const DEFAULT_LOOKBACK_SECONDS: u64 = 600;

/// What alerts may do to one environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertPolicy {
    /// Whether alerts may act at all.
    pub enabled: bool,
    /// The actions they may take: `disable` (kill the flags named by `flagd_flag`) and
    /// `revert` (the environment to its last known-good version).
    pub actions: Vec<String>,
    /// The flags alerts may disable; `["*"]` for any.
    pub flags: Vec<String>,
    /// "Last known good" is the head at the alert's `startsAt` minus this.
    pub lookback_seconds: u64,
    /// When the policy was last set (RFC 3339); none for the defaults.
    #[serde(default, skip_deserializing)]
    pub updated_at: Option<String>,
    /// Who set it.
    #[serde(default, skip_deserializing)]
    pub updated_by: Option<String>,
}

impl Default for AlertPolicy {
    /// Kill switches from alerts, on any flag; no automatic reverts until an admin
    /// allows them (a revert changes every flag that changed in the window).
    fn default() -> Self {
        Self {
            enabled: true,
            actions: vec!["disable".into()],
            flags: vec!["*".into()],
            lookback_seconds: DEFAULT_LOOKBACK_SECONDS,
            updated_at: None,
            updated_by: None,
        }
    }
}

impl AlertPolicy {
    /// Why the policy refuses `action` (on `flag`), if it does.
    pub fn refuses(&self, action: &str, flag: Option<&str>) -> Option<String> {
        if !self.enabled {
            return Some(
                "alerts may not act on this environment (its alert policy is disabled)".into(),
            );
        }
        if !self.actions.iter().any(|a| a == action) {
            return Some(format!(
                "the alert policy does not allow \"{action}\" (allowed: {})",
                if self.actions.is_empty() {
                    "nothing".to_owned()
                } else {
                    self.actions.join(", ")
                }
            ));
        }
        if let Some(f) = flag
            && !self.flags.iter().any(|a| a == "*" || a == f)
        {
            return Some(format!(
                "the alert policy does not allow alerts to disable \"{f}\""
            ));
        }
        None
    }
}

/// One thing one firing of one alert asked for, and what came of it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertEpisode {
    /// Identifies the firing and the request: its group, fingerprint, `startsAt`, the
    /// action and its target.
    #[serde(skip)]
    pub key: String,
    /// The environment.
    pub environment: String,
    /// The alert's `alertname`.
    pub alertname: String,
    /// Alertmanager's fingerprint of its labels.
    pub fingerprint: String,
    /// When it began firing (ms).
    #[serde(skip)]
    pub starts_at_ms: i64,
    /// When it began firing (RFC 3339).
    pub starts_at: String,
    /// `disable`, `revert`, `resolved` (the end of the firing), or `none`.
    pub action: String,
    /// The flag, or the environment.
    pub target: String,
    /// `applied`, `unchanged` (nothing to do), `refused`, `stale` (the firing had
    /// already been resolved) or `resolved`.
    pub outcome: String,
    /// What was done or why not, in words.
    pub detail: String,
    /// The version it made.
    pub version: Option<u64>,
    /// When flagd received it (ms).
    #[serde(skip)]
    pub received_at_ms: i64,
    /// When flagd received it (RFC 3339).
    pub received_at: String,
    /// When its resolution arrived (RFC 3339).
    pub resolved_at: Option<String>,
}

fn episode_of(r: &AnyRow) -> StoreResult<AlertEpisode> {
    let starts: i64 = r.try_get("starts_at")?;
    let received: i64 = r.try_get("received_at")?;
    Ok(AlertEpisode {
        key: r.try_get("key")?,
        environment: r.try_get("env")?,
        alertname: r.try_get("alertname")?,
        fingerprint: r.try_get("fingerprint")?,
        starts_at_ms: starts,
        starts_at: rfc3339(starts),
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        outcome: r.try_get("outcome")?,
        detail: r.try_get("detail")?,
        version: r.try_get::<Option<i64>, _>("version")?.map(to_u64),
        received_at_ms: received,
        received_at: rfc3339(received),
        resolved_at: r.try_get::<Option<i64>, _>("resolved_at")?.map(rfc3339),
    })
}

async fn insert_episode(tx: &mut Tx, e: &AlertEpisode) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO alert_episodes (key, env, alertname, fingerprint, starts_at, action, target, outcome, detail, version, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (key) DO NOTHING",
    )
    .bind(&e.key)
    .bind(&e.environment)
    .bind(&e.alertname)
    .bind(&e.fingerprint)
    .bind(e.starts_at_ms)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.outcome)
    .bind(&e.detail)
    .bind(e.version.map(to_i64))
    .bind(e.received_at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

fn policy_of(r: &AnyRow) -> StoreResult<AlertPolicy> {
    let list = |col: &str| -> StoreResult<Vec<String>> {
        serde_json::from_str(&r.try_get::<String, _>(col)?)
            .map_err(|e| StoreError::Internal(e.into()))
    };
    Ok(AlertPolicy {
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        actions: list("actions")?,
        flags: list("flags")?,
        lookback_seconds: to_u64(r.try_get::<i64, _>("lookback_ms")? / 1000),
        updated_at: Some(rfc3339(r.try_get("updated_at")?)),
        updated_by: Some(r.try_get("updated_by")?),
    })
}

impl Store {
    /// An environment's alert policy ([`AlertPolicy::default`] until one is set).
    pub async fn alert_policy(&self, env: &str) -> StoreResult<AlertPolicy> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM alert_policies WHERE env = $1")
            .bind(env)
            .fetch_optional(&mut *conn)
            .await?;
        match row {
            Some(r) => policy_of(&r),
            None => Ok(AlertPolicy::default()),
        }
    }

    /// Sets an environment's alert policy, with its audit entry (before and after).
    pub async fn set_alert_policy(
        &self,
        actor: &str,
        env: &str,
        policy: &AlertPolicy,
    ) -> StoreResult<AlertPolicy> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        lock_env(&mut tx, self.backend, env).await?;
        let before = sqlx::query("SELECT * FROM alert_policies WHERE env = $1")
            .bind(env)
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(policy_of)
            .transpose()?;
        let js =
            |v: &Vec<String>| serde_json::to_string(v).map_err(|e| StoreError::Internal(e.into()));
        let lookback =
            i64::try_from(policy.lookback_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO alert_policies (env, enabled, actions, flags, lookback_ms, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (env) DO UPDATE SET enabled = EXCLUDED.enabled, \
             actions = EXCLUDED.actions, flags = EXCLUDED.flags, lookback_ms = EXCLUDED.lookback_ms, \
             updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
        )
        .bind(env)
        .bind(i64::from(policy.enabled))
        .bind(js(&policy.actions)?)
        .bind(js(&policy.flags)?)
        .bind(lookback)
        .bind(now_ms())
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        let after = policy_of(
            &sqlx::query("SELECT * FROM alert_policies WHERE env = $1")
                .bind(env)
                .fetch_one(&mut *tx)
                .await?,
        )?;
        let value =
            |p: &AlertPolicy| serde_json::to_value(p).map_err(|e| StoreError::Internal(e.into()));
        audit(
            &mut tx,
            &AuditRecord {
                actor: actor.into(),
                action: "alert-policy.update".into(),
                env: Some(env.into()),
                target: env.into(),
                reason: None,
                before: Some(value(&before.unwrap_or_default())?),
                after: Some(value(&after)?),
            },
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// The episode recorded under `key`, if any.
    pub async fn alert_episode(&self, key: &str) -> StoreResult<Option<AlertEpisode>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM alert_episodes WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(episode_of).transpose()
    }

    /// Whether the firing of `fingerprint` that began at `starts_at_ms` has been
    /// resolved (its resolution may arrive before a retried firing).
    pub async fn alert_resolved(
        &self,
        env: &str,
        fingerprint: &str,
        starts_at_ms: i64,
    ) -> StoreResult<bool> {
        let mut conn = self.read().await?;
        let row = sqlx::query(
            "SELECT 1 FROM alert_episodes WHERE env = $1 AND fingerprint = $2 AND starts_at = $3 AND action = 'resolved'",
        )
        .bind(env)
        .bind(fingerprint)
        .bind(starts_at_ms)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.is_some())
    }

    /// Records an episode that made no version (nothing to do, refused, stale, a
    /// resolution), with an audit entry when `audit_action` is given; once per key.
    /// A resolution also stamps the firing's episodes. Returns whether it was new.
    pub async fn record_alert_episode(
        &self,
        episode: &AlertEpisode,
        actor: &str,
        audit_action: Option<&str>,
        payload: Option<Value>,
    ) -> StoreResult<bool> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let new = insert_episode(&mut tx, episode).await?;
        if new {
            if episode.action == "resolved" {
                sqlx::query(
                    "UPDATE alert_episodes SET resolved_at = $1 WHERE env = $2 AND fingerprint = $3 AND starts_at = $4 AND resolved_at IS NULL",
                )
                .bind(episode.received_at_ms)
                .bind(&episode.environment)
                .bind(&episode.fingerprint)
                .bind(episode.starts_at_ms)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(action) = audit_action {
                audit(
                    &mut tx,
                    &AuditRecord {
                        actor: actor.into(),
                        action: action.into(),
                        env: Some(episode.environment.clone()),
                        target: episode.target.clone(),
                        reason: Some(clip_reason(&episode.detail)),
                        before: None,
                        after: payload,
                    },
                    None,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(new)
    }

    /// An environment's episodes, newest first.
    pub async fn alert_episodes(&self, env: &str, limit: u32) -> StoreResult<Vec<AlertEpisode>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query(
            "SELECT * FROM alert_episodes WHERE env = $1 ORDER BY received_at DESC, key LIMIT $2",
        )
        .bind(env)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(episode_of).collect()
    }
}

/// A reason within the audit log's limit.
pub fn clip_reason(reason: &str) -> String {
    if reason.chars().count() <= MAX_REASON_CHARS {
        return reason.to_owned();
    }
    reason
        .chars()
        .take(MAX_REASON_CHARS - 3)
        .collect::<String>()
        + "..."
}

impl WriteTx<'_> {
    /// Whether an episode with this key is recorded (read under the environment's
    /// write lock: a duplicate delivery racing this one waits, then sees it).
    pub async fn alert_episode_seen(&mut self, key: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM alert_episodes WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.is_some())
    }

    /// Records `episode` (its version filled in) and an audit entry `audit_action`
    /// holding `payload` (the alert) in this change's transaction, if it commits a
    /// version: the version and the proof that this firing made it are one.
    pub fn record_alert(&mut self, episode: AlertEpisode, audit_action: &str, payload: Value) {
        self.alert = Some((episode, audit_action.to_owned(), payload));
    }

    /// The version at the head at `at_ms` (the newest made at or before it); `None`
    /// when the environment did not exist yet.
    pub async fn head_at(&mut self, at_ms: i64) -> StoreResult<Option<u64>> {
        let created: i64 = sqlx::query("SELECT created_at FROM environments WHERE key = $1")
            .bind(&self.env.key)
            .fetch_one(&mut *self.tx)
            .await?
            .try_get(0)?;
        if created > at_ms {
            return Ok(None);
        }
        let row =
            sqlx::query("SELECT MAX(version) FROM versions WHERE env = $1 AND created_at <= $2")
                .bind(&self.env.key)
                .bind(at_ms)
                .fetch_one(&mut *self.tx)
                .await?;
        Ok(Some(row.try_get::<Option<i64>, _>(0)?.map_or(0, to_u64)))
    }

    /// The newest automatic revert after `version`, if any.
    pub async fn auto_revert_after(&mut self, version: u64) -> StoreResult<Option<u64>> {
        let row = sqlx::query(
            "SELECT MAX(version) FROM versions WHERE env = $1 AND version > $2 AND kind = 'auto-revert'",
        )
        .bind(&self.env.key)
        .bind(to_i64(version))
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.map(to_u64))
    }

    /// The versions after `version` (the first twenty), with author and kind: what an
    /// automatic revert to `version` undoes.
    pub async fn versions_after(
        &mut self,
        version: u64,
    ) -> StoreResult<Vec<(u64, String, String)>> {
        let rows = sqlx::query(
            "SELECT version, author, kind FROM versions WHERE env = $1 AND version > $2 ORDER BY version LIMIT 20",
        )
        .bind(&self.env.key)
        .bind(to_i64(version))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok((to_u64(r.try_get(0)?), r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Writes the episode and the alert's audit entry of [`WriteTx::record_alert`].
    pub(super) async fn write_alert(&mut self, version: i64, actor: &str) -> StoreResult<()> {
        let Some((mut episode, action, payload)) = self.alert.take() else {
            return Ok(());
        };
        episode.version = Some(to_u64(version));
        if !insert_episode(&mut self.tx, &episode).await? {
            return Err(StoreError::Conflict {
                message: "this firing of the alert has already acted".into(),
                current_version: Some(self.env.version),
            });
        }
        audit(
            &mut self.tx,
            &AuditRecord {
                actor: actor.into(),
                action,
                env: Some(self.env.key.clone()),
                target: episode.target.clone(),
                reason: Some(clip_reason(&episode.detail)),
                before: None,
                after: Some(payload),
            },
            Some(to_u64(version)),
        )
        .await
    }
}
