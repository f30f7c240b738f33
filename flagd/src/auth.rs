//! Tokens and roles. A token is a random 256-bit secret shown once; the store keeps
//! only its SHA-256.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read flags, versions, diffs, the audit log.
    Viewer,
    /// Change flags: create, edit, delete, import, toggle, rollout, revert.
    Editor,
    /// Break-glass: kill switch, revert, rollout percentage.
    Responder,
    /// Pipelines: read, rollout percentage, validate.
    Ci,
    /// Everything, including tokens and environments.
    Admin,
    /// An SDK key: streaming and evaluation only, one environment.
    Sdk,
    /// Alertmanager's webhook: the alert receiver only (kill switches and reverts to
    /// last known good, as each environment's alert policy allows).
    Alertmanager,
}

impl Role {
    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "viewer" => Self::Viewer,
            "editor" => Self::Editor,
            "responder" => Self::Responder,
            "ci" => Self::Ci,
            "admin" => Self::Admin,
            "sdk" => Self::Sdk,
            "alertmanager" => Self::Alertmanager,
            _ => return None,
        })
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Editor => "editor",
            Self::Responder => "responder",
            Self::Ci => "ci",
            Self::Admin => "admin",
            Self::Sdk => "sdk",
            Self::Alertmanager => "alertmanager",
        }
    }
}

/// An action that needs permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perm {
    /// Read anything but tokens.
    Read,
    /// Validate a document (changes nothing).
    Validate,
    /// Create, replace or delete flags, one at a time or by importing a document.
    EditFlags,
    /// Replace the whole flag set with a document (flags as code from a reviewed file).
    Import,
    /// Enable or disable a flag.
    KillSwitch,
    /// Set a flag's percentage split.
    Rollout,
    /// Revert the set or restore one flag.
    Revert,
    /// Create and delete environments.
    ManageEnvironments,
    /// Create, list and revoke tokens and SDK keys.
    ManageTokens,
    /// Deliver alerts to the receiver, which acts on them within the alert policy.
    ReceiveAlerts,
    /// Approve or reject change requests and acknowledge break-glass reviews (people
    /// only: see [`Caller::person`]).
    Approve,
}

impl Perm {
    fn describe(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Validate => "validate",
            Self::EditFlags => "change flags",
            Self::Import => "import a flag set",
            Self::KillSwitch => "enable or disable flags",
            Self::Rollout => "change rollout percentages",
            Self::Revert => "revert",
            Self::ManageEnvironments => "manage environments",
            Self::ManageTokens => "manage tokens",
            Self::ReceiveAlerts => "deliver alerts",
            Self::Approve => "approve changes",
        }
    }
}

/// The role-permission matrix.
pub fn allows(role: Role, perm: Perm) -> bool {
    use Perm::*;
    match role {
        Role::Admin => true,
        Role::Editor => matches!(
            perm,
            Read | Validate | EditFlags | Import | KillSwitch | Rollout | Revert | Approve
        ),
        Role::Responder => matches!(
            perm,
            Read | Validate | KillSwitch | Rollout | Revert | ReceiveAlerts
        ),
        // A pipeline promotes, rolls back what it promoted, and applies reviewed files;
        // it never toggles by hand or edits single flags.
        Role::Ci => matches!(perm, Read | Validate | Rollout | Revert | Import),
        Role::Viewer => matches!(perm, Read | Validate),
        Role::Sdk => false,
        // Alertmanager cannot sign its body: whoever holds its token can deliver alerts,
        // and nothing else, not even read.
        Role::Alertmanager => perm == ReceiveAlerts,
    }
}

/// The authenticated caller of a request: a token, or a person signed in to the UI.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's name or the person's login: recorded as the author of changes.
    pub name: String,
    /// The token's id (`user:<id>` for a person): its streams close when it is revoked.
    pub token_id: String,
    /// The person signed in, when it is one (`None` for a token).
    pub user_id: Option<String>,
    /// The person who created the token, by id (for a person: their own id).
    pub created_by_user: Option<String>,
    /// Its role.
    pub role: Role,
    /// The environments it is limited to; `None` for all.
    pub environments: Option<Vec<String>>,
    /// The hash of the UI session's secret, when the request came with the cookie.
    pub session: Option<String>,
}

impl Caller {
    /// Refuses (403) what the role does not allow, or an environment outside the token's.
    pub fn check(&self, perm: Perm, env: Option<&str>) -> Result<(), ApiError> {
        if !allows(self.role, perm) {
            let who = if self.user_id.is_some() {
                format!("as a {}, you", self.role.as_str())
            } else {
                format!("a {} token", self.role.as_str())
            };
            return Err(ApiError::Forbidden(format!(
                "{who} may not {}",
                perm.describe()
            )));
        }
        if let (Some(env), Some(allowed)) = (env, &self.environments)
            && !allowed.iter().any(|a| a == env)
        {
            return Err(ApiError::Forbidden(format!(
                "this token is not valid for environment \"{env}\""
            )));
        }
        Ok(())
    }

    /// Refuses (403) a token limited to some environments what concerns every
    /// environment (creating one, or a token that is not limited as narrowly).
    pub fn check_unlimited(&self, perm: Perm) -> Result<(), ApiError> {
        self.check(perm, None)?;
        match &self.environments {
            None => Ok(()),
            Some(envs) => Err(ApiError::Forbidden(format!(
                "this token is limited to environments [{}]: it may not {} beyond them",
                envs.join(", "),
                perm.describe()
            ))),
        }
    }

    /// Whether a set of environments (`None`: all) lies within the caller's own: a
    /// limited admin manages only tokens no wider than itself.
    pub fn covers(&self, scope: Option<&[String]>) -> bool {
        match (&self.environments, scope) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs.iter().all(|e| mine.contains(e)),
        }
    }

    /// The person behind the request, who may approve: the person signed in, or the
    /// person who created the token (a token created by another token names no person).
    pub async fn person(&self, store: &crate::store::Store) -> Result<Option<String>, ApiError> {
        if self.user_id.is_some() {
            return Ok(Some(self.name.clone()));
        }
        let Some(id) = &self.created_by_user else {
            return Ok(None);
        };
        Ok(store
            .user(id)
            .await?
            .filter(|u| u.disabled_at.is_none())
            .map(|u| u.login))
    }

    /// Whether the token may see an environment at all.
    pub fn sees(&self, env: &str) -> bool {
        self.environments
            .as_ref()
            .is_none_or(|a| a.iter().any(|e| e == env))
    }
}

/// A new random secret with a prefix naming its kind (`fd_` tokens, `fdsdk_` SDK keys).
pub fn new_secret(prefix: &str) -> anyhow::Result<String> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
    ))
}

/// A short random identifier (12 URL-safe characters, never beginning with `-`, which
/// a command line would take for an option).
pub fn new_id() -> anyhow::Result<String> {
    let mut buf = [0u8; 9];
    loop {
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        // The first character is the first byte's top six bits; 62 is `-`.
        if buf[0] >> 2 != 62 {
            return Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf));
        }
    }
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex(&digest_secret(secret))
}

/// The SHA-256 of a secret, for in-memory lookups that need no hex.
pub fn digest_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Lower-case hex. Every authenticated request hashes its secret; one `format!` per byte
/// showed in remote evaluation's profile.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The cookie that carries a UI session's secret.
pub const SESSION_COOKIE: &str = "flagd_session";
/// The header that carries a UI session's CSRF token on every change.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of a cookie in the request, if sent.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Equal in time independent of where they differ (the CSRF token is a secret).
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The caller a stored token makes, with the session it came through, if any.
pub(crate) fn caller_of(
    token: crate::store::TokenInfo,
    session: Option<String>,
) -> Result<Caller, ApiError> {
    let role = parse_role(&token.role, &token.id)?;
    Ok(Caller {
        token_id: token.id,
        name: token.name,
        user_id: None,
        created_by_user: token.created_by_user,
        role,
        environments: token.environments,
        session,
    })
}

/// The caller a person makes, through their session.
pub(crate) fn caller_of_user(
    user: crate::store::UserInfo,
    session: Option<String>,
) -> Result<Caller, ApiError> {
    let role = parse_role(&user.role, &user.id)?;
    Ok(Caller {
        token_id: format!("user:{}", user.id),
        name: user.login.clone(),
        created_by_user: Some(user.id.clone()),
        user_id: Some(user.id),
        role,
        environments: user.environments,
        session,
    })
}

/// The caller of a UI session.
pub(crate) fn caller_of_session(
    principal: crate::store::Principal,
    session: Option<String>,
) -> Result<Caller, ApiError> {
    match principal {
        crate::store::Principal::Token(t) => caller_of(t, session),
        crate::store::Principal::User(u) => caller_of_user(u, session),
    }
}

fn parse_role(role: &str, id: &str) -> Result<Role, ApiError> {
    Role::parse(role)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("{id} has unknown role {role}")))
}

/// The roles a person may have (SDK keys and Alertmanager's token are machines').
pub fn person_role(role: &str) -> Option<Role> {
    Role::parse(role).filter(|r| !matches!(r, Role::Sdk | Role::Alertmanager))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_begin_with_a_hyphen() {
        // One in 64 would without the redraw: 10,000 draws all but certainly hit one.
        let ids: Vec<String> = (0..10_000).map(|_| new_id().unwrap()).collect();
        assert!(ids.iter().all(|id| id.len() == 12 && !id.starts_with('-')));
        assert!(
            ids.iter().any(|id| id.contains('-')),
            "still URL-safe base64"
        );
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let a = new_secret("fd_").unwrap();
        let b = new_secret("fd_").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("fd_") && a.len() == 3 + 43);
        assert_eq!(
            hash_secret("x"),
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
    }

    #[test]
    fn cookies_and_secrets() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=1; flagd_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }

    #[test]
    fn matrix() {
        assert!(allows(Role::Responder, Perm::KillSwitch));
        assert!(!allows(Role::Responder, Perm::EditFlags));
        assert!(allows(Role::Ci, Perm::Rollout));
        assert!(allows(Role::Ci, Perm::Revert));
        assert!(allows(Role::Ci, Perm::Import));
        assert!(!allows(Role::Ci, Perm::KillSwitch));
        assert!(!allows(Role::Ci, Perm::EditFlags));
        assert!(!allows(Role::Responder, Perm::Import));
        assert!(!allows(Role::Viewer, Perm::KillSwitch));
        assert!(!allows(Role::Sdk, Perm::Read));
        assert!(allows(Role::Admin, Perm::ManageTokens));
        assert!(!allows(Role::Editor, Perm::ManageTokens));
    }
}
