//! People who sign in: local passwords (argon2id) and single sign-on with an OpenID
//! Connect provider ([`oidc`]). The store keeps the accounts (`store::users`); this
//! module holds what is not storage: hashing, the password rules, the provider.

pub mod oidc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::ApiError;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest: argon2 takes any length, but a megabyte "password" is a way to burn
/// the server's CPU.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// argon2id with OWASP's first recommended setting (19 MiB, 2 passes, 1 lane).
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Refuses a password that is too short or too long (400 naming `field`).
pub fn check_password(field: &str, password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            field,
            format!("is {n} characters long; at least {MIN_PASSWORD_CHARS} are required"),
        ));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(
            field,
            format!("is {n} characters long; at most {MAX_PASSWORD_CHARS}"),
        ));
    }
    Ok(())
}

/// The PHC string of a password's argon2id hash, with a random salt. Run on a
/// blocking thread: it takes tens of milliseconds by design.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        hasher()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
    .map_err(ApiError::Internal)
}

/// A hash of no password, verified against when the login is unknown so that a wrong
/// login takes as long as a wrong password (nothing to learn about who has an account).
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$YTDeeFXBQ2Bd1fpwZvt0pvsRsILSXx4VtbnJVGqX4CY";

/// Whether a password matches a stored hash (`None`: no account, or no password; the
/// same work is done either way).
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let known = hash.is_some();
        let stored = hash.unwrap_or_else(|| DECOY.to_owned());
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return false;
        };
        let ok = hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && known
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))
}

/// A login as stored: trimmed and lower-case; letters, digits and `.`, `_`, `-`, `@`,
/// `+` only, so that it reads the same everywhere it is recorded.
pub fn normalize_login(field: &str, login: &str) -> Result<String, ApiError> {
    let l = login.trim().to_lowercase();
    if l.is_empty() || l.chars().count() > 254 {
        return Err(ApiError::invalid(
            field,
            "must be 1 to 254 characters (a user name or an e-mail address)",
        ));
    }
    if let Some(c) = l
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+')))
    {
        return Err(ApiError::invalid(
            field,
            format!("may hold letters, digits, '.', '_', '-', '@' and '+' only, not {c:?}"),
        ));
    }
    if l.starts_with("plan:") || l.starts_with("trigger:") {
        return Err(ApiError::invalid(field, "is reserved"));
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            verify_password("correct horse battery".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify_password("correct horse batterY".into(), Some(h))
                .await
                .unwrap()
        );
        // The decoy is a valid hash (so the work is real) that no password opens.
        assert!(PasswordHash::new(DECOY).is_ok());
        assert!(!verify_password("".into(), None).await.unwrap());
    }

    #[test]
    fn password_and_login_rules() {
        assert!(check_password("password", "short").is_err());
        assert!(check_password("password", "twelve chars").is_ok());
        assert!(check_password("password", &"x".repeat(257)).is_err());
        assert_eq!(
            normalize_login("login", " Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        assert!(normalize_login("login", "a b").is_err());
        assert!(normalize_login("login", "").is_err());
        assert!(normalize_login("login", "plan:x").is_err());
    }
}
