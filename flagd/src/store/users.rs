//! People: personal accounts (a local password or OpenID Connect), their UI sessions,
//! and the sign-ins under way with an identity provider.

use super::*;

/// Consecutive wrong passwords after which an account is locked for a while.
pub const MAX_FAILED_LOGINS: i64 = 10;
/// How long such a lock lasts.
pub const LOCK_MS: i64 = 15 * 60 * 1000;

/// A person (never their password hash).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    /// Identifier.
    pub id: String,
    /// What versions and the audit log record as the author (an e-mail address for
    /// people who sign in with an identity provider).
    pub login: String,
    /// Display name.
    pub name: String,
    /// E-mail address, when known.
    pub email: Option<String>,
    /// Role.
    pub role: String,
    /// The environments they are limited to; `None` for all.
    pub environments: Option<Vec<String>>,
    /// Who set the role: `admin`, or `claim` (the identity provider, at every sign-in).
    pub role_source: String,
    /// Whether they may sign in with a password.
    pub password: bool,
    /// The identity provider's issuer they are bound to, if any.
    pub oidc_issuer: Option<String>,
    /// When they were created (RFC 3339).
    pub created_at: String,
    /// Who created them.
    pub created_by: String,
    /// Their last sign-in.
    pub last_login_at: Option<String>,
    /// When they were disabled, if they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
}

pub(super) fn user_of(r: &AnyRow) -> StoreResult<UserInfo> {
    let envs: Option<String> = r.try_get("environments")?;
    Ok(UserInfo {
        id: r.try_get("id")?,
        login: r.try_get("login")?,
        name: r.try_get("name")?,
        email: r.try_get("email")?,
        role: r.try_get("role")?,
        environments: envs
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| StoreError::Internal(e.into()))?,
        role_source: r.try_get("role_source")?,
        password: r.try_get::<Option<String>, _>("password_hash")?.is_some(),
        oidc_issuer: r.try_get("oidc_issuer")?,
        created_at: rfc3339(r.try_get("created_at")?),
        created_by: r.try_get("created_by")?,
        last_login_at: r.try_get::<Option<i64>, _>("last_login_at")?.map(rfc3339),
        disabled_at: r.try_get::<Option<i64>, _>("disabled_at")?.map(rfc3339),
    })
}

/// A new person, as an admin creates them.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Their login (lower-case).
    pub login: String,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Role.
    pub role: String,
    /// The environments they are limited to.
    pub environments: Option<Vec<String>>,
    /// The argon2 hash of their password; `None` for single sign-on only.
    pub password_hash: Option<String>,
}

/// A change to a person, as an admin makes it (each `None` leaves it as it is).
#[derive(Clone, Debug, Default)]
pub struct UserChange {
    /// Display name.
    pub name: Option<String>,
    /// Role (the source becomes `admin`).
    pub role: Option<String>,
    /// Environments (`Some(None)`: all).
    pub environments: Option<Option<Vec<String>>>,
    /// A new password hash (`Some(None)` removes the password).
    pub password_hash: Option<Option<String>>,
    /// Disable (`true`) or enable again (`false`).
    pub disabled: Option<bool>,
}

/// What a password sign-in finds.
#[derive(Clone, Debug)]
pub struct PasswordLogin {
    /// The person.
    pub user: UserInfo,
    /// Their password hash, if they have one.
    pub hash: Option<String>,
    /// Locked by too many wrong passwords until then (ms), if locked.
    pub locked_until: Option<i64>,
}

/// What an identity provider says of the person signing in.
#[derive(Clone, Debug)]
pub struct OidcIdentity {
    /// The provider's issuer URL.
    pub issuer: String,
    /// The subject (stable per provider).
    pub subject: String,
    /// The login to record (the verified e-mail address, else the preferred user
    /// name, else the subject).
    pub login: String,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: Option<String>,
    /// The role and environments their claims map to, if any.
    pub mapped: Option<(String, Option<Vec<String>>)>,
}

fn envs_text(envs: Option<&[String]>) -> Option<String> {
    envs.map(|e| serde_json::to_string(e).unwrap_or_else(|_| "[]".into()))
}

fn to_value<T: Serialize>(v: &T) -> StoreResult<Value> {
    serde_json::to_value(v).map_err(|e| StoreError::Internal(e.into()))
}

impl Store {
    /// Every person, the disabled ones included.
    pub async fn users(&self) -> StoreResult<Vec<UserInfo>> {
        let mut conn = self.read().await?;
        let rows = sqlx::query("SELECT * FROM users ORDER BY login")
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(user_of).collect()
    }

    /// A person by id.
    pub async fn user(&self, id: &str) -> StoreResult<Option<UserInfo>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(user_of).transpose()
    }

    /// Creates a person (audited).
    pub async fn create_user(&self, actor: &str, id: &str, new: &NewUser) -> StoreResult<UserInfo> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let taken = sqlx::query("SELECT id FROM users WHERE login = $1")
            .bind(&new.login)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict {
                message: format!("a person with login \"{}\" exists already", new.login),
                current_version: None,
            });
        }
        sqlx::query(
            "INSERT INTO users (id, login, name, email, role, environments, role_source, password_hash, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, 'admin', $7, $8, $9)",
        )
        .bind(id)
        .bind(&new.login)
        .bind(&new.name)
        .bind(&new.email)
        .bind(&new.role)
        .bind(envs_text(new.environments.as_deref()))
        .bind(&new.password_hash)
        .bind(now_ms())
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        let info = user_in(&mut tx, id).await?;
        user_audit(&mut tx, actor, "user.create", None, Some(&info)).await?;
        tx.commit().await?;
        Ok(info)
    }

    /// Changes a person (audited); disabling them ends their sessions.
    pub async fn update_user(
        &self,
        actor: &str,
        id: &str,
        change: &UserChange,
    ) -> StoreResult<UserInfo> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let before = match sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        {
            Some(r) => user_of(&r)?,
            None => return Err(StoreError::NotFound(format!("no person with id \"{id}\""))),
        };
        if let Some(name) = &change.name {
            sqlx::query("UPDATE users SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(role) = &change.role {
            sqlx::query("UPDATE users SET role = $1, role_source = 'admin' WHERE id = $2")
                .bind(role)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(envs) = &change.environments {
            sqlx::query("UPDATE users SET environments = $1, role_source = 'admin' WHERE id = $2")
                .bind(envs_text(envs.as_deref()))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(hash) = &change.password_hash {
            sqlx::query(
                "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = NULL WHERE id = $2",
            )
            .bind(hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        match change.disabled {
            Some(true) if before.disabled_at.is_none() => {
                sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2")
                    .bind(now_ms())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(false) => {
                sqlx::query("UPDATE users SET disabled_at = NULL, failed_logins = 0, locked_until = NULL WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            _ => {}
        }
        let after = user_in(&mut tx, id).await?;
        let action = match change.disabled {
            Some(true) => "user.disable",
            Some(false) => "user.enable",
            None if change.password_hash.is_some() && change.role.is_none() => "user.password",
            None => "user.update",
        };
        user_audit(&mut tx, actor, action, Some(&before), Some(&after)).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// What a password sign-in needs of an enabled person.
    pub async fn password_login(&self, login: &str) -> StoreResult<Option<PasswordLogin>> {
        let mut conn = self.read().await?;
        let row = sqlx::query("SELECT * FROM users WHERE login = $1 AND disabled_at IS NULL")
            .bind(login)
            .fetch_optional(&mut *conn)
            .await?;
        row.map(|r| {
            Ok(PasswordLogin {
                user: user_of(&r)?,
                hash: r.try_get("password_hash")?,
                locked_until: r
                    .try_get::<Option<i64>, _>("locked_until")?
                    .filter(|t| *t > now_ms()),
            })
        })
        .transpose()
    }

    /// Counts a wrong password; the tenth in a row locks the account for a while (audited).
    pub async fn failed_login(&self, user: &UserInfo) -> StoreResult<()> {
        let mut tx = self.begin_tx().await?;
        sqlx::query("UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1")
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        let failed: i64 = sqlx::query("SELECT failed_logins FROM users WHERE id = $1")
            .bind(&user.id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if failed >= MAX_FAILED_LOGINS {
            let until = now_ms() + LOCK_MS;
            sqlx::query("UPDATE users SET failed_logins = 0, locked_until = $1 WHERE id = $2")
                .bind(until)
                .bind(&user.id)
                .execute(&mut *tx)
                .await?;
            audit(
                &mut tx,
                &AuditRecord {
                    actor: user.login.clone(),
                    action: "user.lock".into(),
                    env: None,
                    target: user.login.clone(),
                    reason: Some(format!(
                        "{MAX_FAILED_LOGINS} wrong passwords in a row: locked until {}",
                        rfc3339(until)
                    )),
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

    /// Opens a UI session for a person (audited), and forgets expired sessions.
    pub async fn create_user_session(
        &self,
        user: &UserInfo,
        secret_hash: &str,
        csrf: &str,
        expires_at: i64,
        how: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_tx().await?;
        sqlx::query("UPDATE users SET last_login_at = $1, failed_logins = 0, locked_until = NULL WHERE id = $2")
            .bind(now_ms())
            .bind(&user.id)
            .execute(&mut *tx)
            .await?;
        let opened = super::tokens::NewSession {
            token_id: None,
            user_id: Some(&user.id),
            secret_hash,
            csrf,
            expires_at,
        };
        let how = Some(format!("signed in with {how}"));
        super::tokens::insert_session(&mut tx, &opened, &user.login, how).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The person an identity provider vouches for: the one bound to its subject, else
    /// an unbound person an admin created with this login (bound now), else a new one
    /// when their claims map to a role. A person whose role comes from the claims gets
    /// the role they map to now, and none (refused) when they map to none.
    pub async fn oidc_user(&self, id: &str, who: &OidcIdentity) -> StoreResult<UserInfo> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.begin_tx().await?;
        let bound = sqlx::query("SELECT * FROM users WHERE oidc_issuer = $1 AND oidc_subject = $2")
            .bind(&who.issuer)
            .bind(&who.subject)
            .fetch_optional(&mut *tx)
            .await?;
        let row = match bound {
            Some(r) => Some(r),
            None => {
                sqlx::query("SELECT * FROM users WHERE login = $1 AND oidc_subject IS NULL")
                    .bind(&who.login)
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        let refused = |why: String| StoreError::Conflict {
            message: why,
            current_version: None,
        };
        let user = match row {
            Some(r) => {
                let before = user_of(&r)?;
                if before.disabled_at.is_some() {
                    return Err(refused(format!(
                        "the account \"{}\" is disabled",
                        before.login
                    )));
                }
                sqlx::query(
                    "UPDATE users SET oidc_issuer = $1, oidc_subject = $2, name = $3, email = COALESCE($4, email) WHERE id = $5",
                )
                .bind(&who.issuer)
                .bind(&who.subject)
                .bind(&who.name)
                .bind(&who.email)
                .bind(&before.id)
                .execute(&mut *tx)
                .await?;
                if before.role_source == "claim" {
                    let Some((role, envs)) = &who.mapped else {
                        return Err(refused(format!(
                            "\"{}\" no longer has a role: the identity provider's claims map to none",
                            who.login
                        )));
                    };
                    sqlx::query("UPDATE users SET role = $1, environments = $2 WHERE id = $3")
                        .bind(role)
                        .bind(envs_text(envs.as_deref()))
                        .bind(&before.id)
                        .execute(&mut *tx)
                        .await?;
                }
                let after = user_in(&mut tx, &before.id).await?;
                if after.role != before.role || after.environments != before.environments {
                    user_audit(&mut tx, "oidc", "user.update", Some(&before), Some(&after)).await?;
                }
                after
            }
            None => {
                let Some((role, envs)) = &who.mapped else {
                    return Err(refused(format!(
                        "\"{}\" has no account here and the identity provider's claims map to no role: an admin must create the account",
                        who.login
                    )));
                };
                let taken = sqlx::query("SELECT id FROM users WHERE login = $1")
                    .bind(&who.login)
                    .fetch_optional(&mut *tx)
                    .await?;
                if taken.is_some() {
                    return Err(refused(format!(
                        "the login \"{}\" belongs to another account (bound to another identity)",
                        who.login
                    )));
                }
                sqlx::query(
                    "INSERT INTO users (id, login, name, email, role, environments, role_source, oidc_issuer, oidc_subject, created_at, created_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'claim', $7, $8, $9, 'oidc')",
                )
                .bind(id)
                .bind(&who.login)
                .bind(&who.name)
                .bind(&who.email)
                .bind(role)
                .bind(envs_text(envs.as_deref()))
                .bind(&who.issuer)
                .bind(&who.subject)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                let info = user_in(&mut tx, id).await?;
                user_audit(&mut tx, "oidc", "user.create", None, Some(&info)).await?;
                info
            }
        };
        tx.commit().await?;
        Ok(user)
    }

    /// Remembers a sign-in sent to the identity provider (and forgets stale ones).
    pub async fn begin_oidc_login(
        &self,
        state_hash: &str,
        nonce: &str,
        verifier: &str,
        expires_at: i64,
    ) -> StoreResult<()> {
        let mut tx = self.begin_tx().await?;
        sqlx::query("DELETE FROM oidc_logins WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO oidc_logins (state_hash, nonce, verifier, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(state_hash)
            .bind(nonce)
            .bind(verifier)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes (once) the nonce and PKCE verifier of a sign-in under way.
    pub async fn take_oidc_login(&self, state_hash: &str) -> StoreResult<Option<(String, String)>> {
        let mut tx = self.begin_tx().await?;
        let row = sqlx::query(
            "SELECT nonce, verifier FROM oidc_logins WHERE state_hash = $1 AND expires_at > $2",
        )
        .bind(state_hash)
        .bind(now_ms())
        .fetch_optional(&mut *tx)
        .await?;
        // Deleted whether live or stale: a state is good for one callback.
        sqlx::query("DELETE FROM oidc_logins WHERE state_hash = $1")
            .bind(state_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }
}

async fn user_in(tx: &mut Tx, id: &str) -> StoreResult<UserInfo> {
    user_of(
        &sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?,
    )
}

async fn user_audit(
    tx: &mut Tx,
    actor: &str,
    action: &str,
    before: Option<&UserInfo>,
    after: Option<&UserInfo>,
) -> StoreResult<()> {
    let target = after
        .or(before)
        .map(|u| u.login.clone())
        .unwrap_or_default();
    audit(
        tx,
        &AuditRecord {
            actor: actor.into(),
            action: action.into(),
            env: None,
            target,
            reason: None,
            before: before.map(to_value).transpose()?,
            after: after.map(to_value).transpose()?,
        },
        None,
    )
    .await
}
