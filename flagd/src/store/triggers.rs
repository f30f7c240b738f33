//! Trigger URLs: what each one does (one action on one flag of one environment), who
//! made it, whether it is revoked, when it last fired.

use super::*;

/// A trigger URL's record (never its secret).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerInfo {
    /// Identifier.
    pub id: String,
    /// The environment.
    pub environment: String,
    /// The flag it acts on.
    pub flag: String,
    /// `disable` or `enable`.
    pub action: String,
    /// Its name (the author of its changes is `trigger:<name>`).
    pub name: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// When it last fired (RFC 3339), if it did.
    pub last_fired_at: Option<String>,
}

fn trigger_of(r: &AnyRow) -> StoreResult<TriggerInfo> {
    Ok(TriggerInfo {
        id: r.try_get("id")?,
        environment: r.try_get("env")?,
        flag: r.try_get("flag_key")?,
        action: r.try_get("action")?,
        name: r.try_get("name")?,
        created_at: rfc3339(r.try_get("created_at")?),
        created_by: r.try_get("created_by")?,
        last_fired_at: r.try_get::<Option<i64>, _>("last_fired_at")?.map(rfc3339),
    })
}

impl Store {
    /// Creates a trigger URL's record (the secret's hash) and its audit entry, at once.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_trigger(
        &self,
        actor: &str,
        id: &str,
        env: &str,
        flag: &str,
        action: &str,
        name: &str,
        hash: &str,
    ) -> StoreResult<TriggerInfo> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        sqlx::query("INSERT INTO triggers (id, env, flag_key, action, name, hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(id)
            .bind(env)
            .bind(flag)
            .bind(action)
            .bind(name)
            .bind(hash)
            .bind(now_ms())
            .bind(actor)
            .execute(&mut *tx)
            .await?;
        let info = trigger_of(
            &sqlx::query("SELECT * FROM triggers WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?,
        )?;
        audit(
            &mut tx,
            &AuditRecord {
                actor: actor.into(),
                action: "trigger.create".into(),
                env: Some(env.into()),
                target: name.into(),
                reason: None,
                before: None,
                after: Some(
                    serde_json::to_value(&info).map_err(|e| StoreError::Internal(e.into()))?,
                ),
            },
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(info)
    }

    /// An environment's trigger URLs that are not revoked.
    pub async fn triggers(&self, env: &str) -> StoreResult<Vec<TriggerInfo>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query(
            "SELECT * FROM triggers WHERE env = $1 AND revoked_at IS NULL ORDER BY created_at, id",
        )
        .bind(env)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(trigger_of).collect()
    }

    /// The trigger URL with this secret hash, unless revoked.
    pub async fn trigger_by_hash(&self, hash: &str) -> StoreResult<Option<TriggerInfo>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM triggers WHERE hash = $1 AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(trigger_of).transpose()
    }

    /// Notes that a trigger fired (shown in its list).
    pub async fn trigger_fired(&self, id: &str) -> StoreResult<()> {
        let mut conn = self.acquire().await?;
        sqlx::query("UPDATE triggers SET last_fired_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Revokes a trigger URL of an environment, with its audit entry.
    pub async fn revoke_trigger(
        &self,
        actor: &str,
        env: &str,
        id: &str,
    ) -> StoreResult<TriggerInfo> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let row =
            sqlx::query("SELECT * FROM triggers WHERE id = $1 AND env = $2 AND revoked_at IS NULL")
                .bind(id)
                .bind(env)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound(format!(
                "no active trigger with id \"{id}\" in \"{env}\""
            )));
        };
        let info = trigger_of(&row)?;
        sqlx::query("UPDATE triggers SET revoked_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            &AuditRecord {
                actor: actor.into(),
                action: "trigger.revoke".into(),
                env: Some(env.into()),
                target: info.name.clone(),
                reason: None,
                before: Some(
                    serde_json::to_value(&info).map_err(|e| StoreError::Internal(e.into()))?,
                ),
                after: None,
            },
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(info)
    }
}
