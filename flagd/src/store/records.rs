//! The records the store reads and writes: environments, versions, audit entries,
//! tokens and sessions.

use super::*;

/// An environment.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// The stable identifier, e.g. `production`.
    pub key: String,
    /// A display name.
    pub name: String,
    /// Shown distinctly, and asks for reasons, in the UI.
    pub production: bool,
    /// The current version of its flag set (0 before the first change).
    pub version: u64,
    /// Changes need approvals (change requests), but for break-glass actions.
    pub protected: bool,
    /// How many approvals a change request needs here.
    pub approvals: u64,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

pub(super) fn env_of(r: &AnyRow) -> StoreResult<Environment> {
    Ok(Environment {
        key: r.try_get("key")?,
        name: r.try_get("name")?,
        production: r.try_get::<i64, _>("production")? != 0,
        version: to_u64(r.try_get("head_version")?),
        protected: r.try_get::<i64, _>("protected")? != 0,
        approvals: to_u64(r.try_get("approvals")?),
        created_at: rfc3339(r.try_get("created_at")?),
    })
}

/// The kind of a change, recorded with its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A flag was created.
    Create,
    /// A flag was replaced.
    Update,
    /// A flag was deleted.
    Delete,
    /// A flag's state changed (kill switch).
    Toggle,
    /// A flag's percentage split changed.
    Rollout,
    /// The whole set was replaced.
    Import,
    /// The set, or one flag, was restored to an earlier version.
    Revert,
    /// One version's change was undone (its items back to their definitions before it).
    Undo,
    /// A flag was disabled by an alert (the Alertmanager receiver).
    AutoDisable,
    /// The set was reverted to its last known-good version by an alert.
    AutoRevert,
}

impl ChangeKind {
    /// Its name, as recorded (`toggle`, `revert`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Toggle => "toggle",
            Self::Rollout => "rollout",
            Self::Import => "import",
            Self::Revert => "revert",
            Self::Undo => "undo",
            Self::AutoDisable => "auto-disable",
            Self::AutoRevert => "auto-revert",
        }
    }
}

/// One version of an environment's flag set.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The version number (gapless from 1).
    pub version: u64,
    /// What kind of change made it.
    pub kind: String,
    /// The token name that made it.
    pub author: String,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub created_at: String,
    /// The flag keys it changed.
    pub changed_flags: Vec<String>,
    /// For a revert: the version it restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverted_to: Option<u64>,
}

pub(super) fn version_of(r: &AnyRow) -> StoreResult<VersionInfo> {
    let changed: String = r.try_get("changed")?;
    Ok(VersionInfo {
        version: to_u64(r.try_get("version")?),
        kind: r.try_get("kind")?,
        author: r.try_get("author")?,
        reason: r.try_get("reason")?,
        created_at: rfc3339(r.try_get("created_at")?),
        changed_flags: serde_json::from_str(&changed)
            .map_err(|e| StoreError::Internal(e.into()))?,
        reverted_to: r.try_get::<Option<i64>, _>("reverted_to")?.map(to_u64),
    })
}

/// An audit entry.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Increasing identifier, also the pagination cursor.
    pub id: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Who: the token name.
    pub actor: String,
    /// What, e.g. `flag.disable`, `flagset.revert`, `token.create`.
    pub action: String,
    /// The environment, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The flag key, environment key or token name acted on.
    pub target: String,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The state before (JSON), if any.
    pub before: Option<Value>,
    /// The state after (JSON), if any.
    pub after: Option<Value>,
    /// The flag-set version the change produced, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// What to append to the audit log.
#[derive(Clone, Debug)]
pub struct AuditRecord {
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Where.
    pub env: Option<String>,
    /// On what.
    pub target: String,
    /// Why.
    pub reason: Option<String>,
    /// Before.
    pub before: Option<Value>,
    /// After.
    pub after: Option<Value>,
}

/// Audit log filters.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    /// Only this environment.
    pub env: Option<String>,
    /// Only entries about this flag key.
    pub flag: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action (`flag.toggle`), or actions starting with it when it ends in
    /// `.` (`flag.`).
    pub action: Option<String>,
    /// At or after (ms).
    pub since: Option<i64>,
    /// Before (ms).
    pub until: Option<i64>,
    /// Entries with an id below this (the previous page's `next`).
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: u32,
    /// Only environments in this list (a token limited to environments).
    pub allowed_envs: Option<Vec<String>>,
}

/// A UI session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Who opened it.
    pub principal: Principal,
    /// The CSRF token the page must send back on every change.
    pub csrf: String,
    /// When it ends (ms).
    pub expires_at: i64,
}

/// Who opened a UI session.
#[derive(Clone, Debug)]
pub enum Principal {
    /// An API token.
    Token(TokenInfo),
    /// A person.
    User(super::users::UserInfo),
}

/// What starting with `FLAGD_ADMIN_TOKEN` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootstrapToken {
    /// It is an active token's secret already.
    Kept,
    /// A new `admin` token was made, replacing (revoking) this many.
    Replaced {
        /// The `admin` tokens revoked.
        revoked: usize,
    },
}

/// A version's record without its list of changed flags.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionSummary {
    /// The version.
    pub version: u64,
    /// Its kind (`toggle`, `rollout`, `revert`, ...).
    pub kind: String,
    /// Who made it.
    pub author: String,
    /// Why.
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub created_at: String,
}

/// A stored token (never its secret).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// Identifier.
    pub id: String,
    /// Name, recorded as the author of its changes.
    pub name: String,
    /// Role.
    pub role: String,
    /// The environments it is limited to; `None` for all.
    pub environments: Option<Vec<String>>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// The person who created it, by id (`None` when a token did).
    #[serde(skip)]
    pub created_by_user: Option<String>,
    /// When it was revoked, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

pub(super) fn token_of(r: &AnyRow) -> StoreResult<TokenInfo> {
    let envs: Option<String> = r.try_get("environments")?;
    Ok(TokenInfo {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        environments: envs
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| StoreError::Internal(e.into()))?,
        created_at: rfc3339(r.try_get("created_at")?),
        created_by: r.try_get("created_by")?,
        created_by_user: r.try_get("created_by_user")?,
        revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(rfc3339),
    })
}
