//! API tokens, UI sessions and the bootstrap admin token.

use super::*;

impl Store {
    /// The token with this secret hash, if active.
    pub async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenInfo>> {
        let _timed = self.timed("read_token");
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM tokens WHERE hash = $1 AND revoked_at IS NULL")
            .bind(hash)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(token_of).transpose()
    }

    /// An active token (or SDK key) by id.
    pub async fn token_by_id(&self, id: &str) -> StoreResult<Option<TokenInfo>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM tokens WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(token_of).transpose()
    }

    /// Active tokens (and SDK keys).
    pub async fn tokens(&self) -> StoreResult<Vec<TokenInfo>> {
        let mut conn = self.read().await?;
        let rows =
            sqlx::query("SELECT * FROM tokens WHERE revoked_at IS NULL ORDER BY created_at, name")
                .fetch_all(&mut *conn)
                .await?;
        rows.iter().map(token_of).collect()
    }

    /// Whether any token exists at all (the first start creates one).
    pub async fn has_tokens(&self) -> StoreResult<bool> {
        let mut conn = self.read().await?;
        Ok(sqlx::query("SELECT id FROM tokens LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?
            .is_some())
    }

    /// Stores a new token by the hash of its secret.
    pub async fn create_token(
        &self,
        actor: &str,
        id: &str,
        name: &str,
        role: &str,
        environments: Option<&[String]>,
        hash: &str,
    ) -> StoreResult<TokenInfo> {
        self.create_token_by(actor, None, id, name, role, environments, hash)
            .await
    }

    /// Stores a new token made by a person (`creator`: their id), whom it then names
    /// when it reviews change requests.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_token_by(
        &self,
        actor: &str,
        creator: Option<&str>,
        id: &str,
        name: &str,
        role: &str,
        environments: Option<&[String]>,
        hash: &str,
    ) -> StoreResult<TokenInfo> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let taken = sqlx::query("SELECT id FROM tokens WHERE name = $1 AND revoked_at IS NULL")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict {
                message: format!("an active token named \"{name}\" exists already"),
                current_version: None,
            });
        }
        let mut info =
            insert_token(&mut tx, actor, id, name, role, environments, hash, None).await?;
        if let Some(user) = creator {
            info.created_by_user = Some(user.to_owned());
            sqlx::query("UPDATE tokens SET created_by_user = $1 WHERE id = $2")
                .bind(user)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(info)
    }

    /// Opens a UI session for a token: stores the hash of the session secret and the
    /// CSRF token, and forgets expired sessions. The audit log records the sign-in.
    pub async fn create_session(
        &self,
        token: &TokenInfo,
        secret_hash: &str,
        csrf: &str,
        expires_at: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin_tx().await?;
        let opened = NewSession {
            token_id: Some(&token.id),
            user_id: None,
            secret_hash,
            csrf,
            expires_at,
        };
        insert_session(&mut tx, &opened, &token.name, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The live session with this secret hash: who opened it (an active token or an
    /// enabled person), its CSRF token and expiry.
    pub async fn session(&self, secret_hash: &str) -> StoreResult<Option<Session>> {
        let _timed = self.timed("read_session");
        let mut conn = self.read().await?;
        let row = sqlx::query(
            "SELECT s.csrf AS session_csrf, s.expires_at AS session_expires, s.token_id AS session_token, s.user_id AS session_user \
             FROM sessions s WHERE s.hash = $1 AND s.expires_at > $2",
        )
        .bind(secret_hash)
        .bind(now_ms())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let token: Option<String> = r.try_get("session_token")?;
        let user: Option<String> = r.try_get("session_user")?;
        let principal = if let Some(id) = token {
            let t = sqlx::query("SELECT * FROM tokens WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            match t {
                Some(t) => Principal::Token(token_of(&t)?),
                None => return Ok(None),
            }
        } else if let Some(id) = user {
            let u = sqlx::query("SELECT * FROM users WHERE id = $1 AND disabled_at IS NULL")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            match u {
                Some(u) => Principal::User(super::users::user_of(&u)?),
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        Ok(Some(Session {
            principal,
            csrf: r.try_get("session_csrf")?,
            expires_at: r.try_get("session_expires")?,
        }))
    }

    /// Ends a session (sign-out), with an audit entry.
    pub async fn delete_session(&self, secret_hash: &str, actor: &str) -> StoreResult<()> {
        let mut tx = self.begin_tx().await?;
        let gone = sqlx::query("DELETE FROM sessions WHERE hash = $1")
            .bind(secret_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone > 0 {
            audit(
                &mut tx,
                &AuditRecord {
                    actor: actor.into(),
                    action: "session.delete".into(),
                    env: None,
                    target: actor.into(),
                    reason: None,
                    before: None,
                    after: None,
                },
                None,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// For each flag of the environment ever changed: the version that last changed it.
    pub async fn last_changes(&self, env: &str) -> StoreResult<HashMap<String, VersionSummary>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query(
            "SELECT flag_key, MAX(version) AS version FROM version_flags WHERE env = $1 GROUP BY flag_key",
        )
        .bind(env)
        .fetch_all(&mut *conn)
        .await?;
        let mut by_flag = Vec::with_capacity(rows.len());
        for r in &rows {
            by_flag.push((
                r.try_get::<String, _>("flag_key")?,
                r.try_get::<i64, _>("version")?,
            ));
        }
        let mut versions: Vec<i64> = by_flag.iter().map(|(_, v)| *v).collect();
        versions.sort_unstable();
        versions.dedup();
        // The version records without their changed-flag lists, which can be long.
        let mut info: HashMap<i64, VersionSummary> = HashMap::new();
        for chunk in versions.chunks(500) {
            let list = (0..chunk.len())
                .map(|i| format!("${}", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT version, kind, author, reason, created_at FROM versions WHERE env = $1 AND version IN ({list})"
            );
            let mut q = sqlx::query(&sql).bind(env);
            for v in chunk {
                q = q.bind(*v);
            }
            for r in q.fetch_all(&mut *conn).await? {
                let v: i64 = r.try_get("version")?;
                info.insert(
                    v,
                    VersionSummary {
                        version: to_u64(v),
                        kind: r.try_get("kind")?,
                        author: r.try_get("author")?,
                        reason: r.try_get("reason")?,
                        created_at: rfc3339(r.try_get("created_at")?),
                    },
                );
            }
        }
        Ok(by_flag
            .into_iter()
            .filter_map(|(k, v)| info.get(&v).map(|i| (k, i.clone())))
            .collect())
    }

    /// Makes `hash` the bootstrap admin token (`FLAGD_ADMIN_TOKEN`), in one transaction:
    /// nothing when it is the secret of an active token; refused when it is a revoked
    /// token's (a revoked secret never works again); else the active tokens named
    /// `admin` are revoked and a new `admin` token is made, both audited, or neither.
    pub async fn bootstrap_token(&self, id: &str, hash: &str) -> StoreResult<BootstrapToken> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let existing = sqlx::query("SELECT name, revoked_at FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(r) = existing {
            let name: String = r.try_get("name")?;
            let revoked_at = r.try_get::<Option<i64>, _>("revoked_at")?;
            tx.rollback().await?;
            return match revoked_at {
                None => Ok(BootstrapToken::Kept),
                Some(at) => Err(StoreError::Conflict {
                    message: format!(
                        "FLAGD_ADMIN_TOKEN is the secret of token \"{name}\", revoked at {}: a revoked secret never works again; start with a new one (nothing was changed)",
                        rfc3339(at)
                    ),
                    current_version: None,
                }),
            };
        }
        let olds = sqlx::query("SELECT * FROM tokens WHERE name = 'admin' AND revoked_at IS NULL")
            .fetch_all(&mut *tx)
            .await?;
        let reason = Some("replaced by the FLAGD_ADMIN_TOKEN given at start".to_owned());
        for row in &olds {
            revoke_in(&mut tx, "flagd", &token_of(row)?, reason.clone()).await?;
        }
        insert_token(&mut tx, "flagd", id, "admin", "admin", None, hash, reason).await?;
        tx.commit().await?;
        Ok(BootstrapToken::Replaced {
            revoked: olds.len(),
        })
    }

    /// Revokes a token.
    pub async fn revoke_token(&self, actor: &str, id: &str) -> StoreResult<TokenInfo> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let row = sqlx::query("SELECT * FROM tokens WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound(format!(
                "no active token with id \"{id}\""
            )));
        };
        let before = token_of(&row)?;
        revoke_in(&mut tx, actor, &before, None).await?;
        tx.commit().await?;
        Ok(before)
    }
}

/// A session to open: by a token or by a person.
pub(super) struct NewSession<'a> {
    pub(super) token_id: Option<&'a str>,
    pub(super) user_id: Option<&'a str>,
    pub(super) secret_hash: &'a str,
    pub(super) csrf: &'a str,
    pub(super) expires_at: i64,
}

/// Forgets expired sessions, stores a new one and audits the sign-in, in the caller's
/// transaction.
pub(super) async fn insert_session(
    tx: &mut Tx,
    new: &NewSession<'_>,
    actor: &str,
    how: Option<String>,
) -> StoreResult<()> {
    let now = now_ms();
    sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO sessions (hash, token_id, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(new.secret_hash)
        .bind(new.token_id)
        .bind(new.user_id)
        .bind(new.csrf)
        .bind(now)
        .bind(new.expires_at)
        .execute(&mut **tx)
        .await?;
    audit(
        tx,
        &AuditRecord {
            actor: actor.into(),
            action: "session.create".into(),
            env: None,
            target: actor.into(),
            reason: how,
            before: None,
            after: Some(serde_json::json!({"expiresAt": rfc3339(new.expires_at)})),
        },
        None,
    )
    .await
}

/// Inserts a token and its audit entry, in the caller's transaction.
#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_token(
    tx: &mut Tx,
    actor: &str,
    id: &str,
    name: &str,
    role: &str,
    environments: Option<&[String]>,
    hash: &str,
    reason: Option<String>,
) -> StoreResult<TokenInfo> {
    let envs = environments.map(|e| serde_json::to_string(e).unwrap_or_else(|_| "[]".into()));
    sqlx::query("INSERT INTO tokens (id, name, role, environments, hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(id)
        .bind(name)
        .bind(role)
        .bind(envs)
        .bind(hash)
        .bind(now_ms())
        .bind(actor)
        .execute(&mut **tx)
        .await?;
    let info = token_of(
        &sqlx::query("SELECT * FROM tokens WHERE id = $1")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?,
    )?;
    audit(
        tx,
        &AuditRecord {
            actor: actor.into(),
            action: if role == "sdk" {
                "sdk-key.create".into()
            } else {
                "token.create".into()
            },
            env: environments
                .filter(|e| e.len() == 1 && role == "sdk")
                .map(|e| e[0].clone()),
            target: name.into(),
            reason,
            before: None,
            after: Some(serde_json::to_value(&info).map_err(|e| StoreError::Internal(e.into()))?),
        },
        None,
    )
    .await?;
    Ok(info)
}

/// Revokes a token and audits it, in the caller's transaction.
pub(super) async fn revoke_in(
    tx: &mut Tx,
    actor: &str,
    before: &TokenInfo,
    reason: Option<String>,
) -> StoreResult<()> {
    sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(&before.id)
        .execute(&mut **tx)
        .await?;
    audit(
        tx,
        &AuditRecord {
            actor: actor.into(),
            action: if before.role == "sdk" {
                "sdk-key.revoke".into()
            } else {
                "token.revoke".into()
            },
            env: None,
            target: before.name.clone(),
            reason,
            before: Some(serde_json::to_value(before).map_err(|e| StoreError::Internal(e.into()))?),
            after: None,
        },
        None,
    )
    .await
}
