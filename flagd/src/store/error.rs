//! What the store answers when it cannot do what was asked. Mapped to HTTP statuses in
//! one place, `crate::error`; the store itself knows nothing of HTTP.

use flagd_core::Problem;

/// A store operation that did not happen; nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such environment, version, flag or token.
    #[error("{0}")]
    NotFound(String),
    /// The change was based on a version that is no longer the head, or the thing
    /// exists already.
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// The environment's head version, when the conflict is about versions.
        current_version: Option<u64>,
    },
    /// The change is not acceptable (a limit, a field too long), with every problem
    /// and its JSON path.
    #[error("{message}")]
    Invalid {
        /// A summary.
        message: String,
        /// Every problem, each with its path.
        details: Vec<Problem>,
    },
    /// The environment is protected: this change needs a change request's approvals.
    #[error("{0}")]
    ApprovalRequired(String),
    /// The store cannot take the request now (full, read-only, locked, unreachable,
    /// its file replaced): a fault of the store, not of the request.
    #[error("{0}")]
    Unavailable(String),
    /// A bug, or a store in a state flagd never leaves it in.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// Invalid, for one problem at one path.
    pub fn invalid(path: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::Invalid {
            message: if path.is_empty() {
                message.clone()
            } else {
                format!("{path}: {message}")
            },
            details: vec![Problem {
                path: path.to_owned(),
                message,
            }],
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => Self::Unavailable(
                "the store is unavailable: no connection to it in time (--store-timeout)".into(),
            ),
            sqlx::Error::PoolClosed => Self::Unavailable("flagd is shutting down".into()),
            sqlx::Error::Io(e) => Self::Unavailable(format!("the store is unreachable: {e}")),
            sqlx::Error::Database(db) => match store_condition(db.code().as_deref()) {
                Some(what) => Self::Unavailable(format!("the store {what}: {}", db.message())),
                None => Self::Internal(sqlx::Error::Database(db).into()),
            },
            other => Self::Internal(other.into()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::Internal(e.into())
    }
}

/// A store error that says the store cannot take writes for now (a fault of the store,
/// not of the request): SQLite's result codes, PostgreSQL's SQLSTATE classes.
fn store_condition(code: Option<&str>) -> Option<&'static str> {
    let code = code?;
    if let Ok(n) = code.parse::<u32>() {
        // SQLite: the primary code is the low byte of the extended one.
        return match n & 0xff {
            5 | 6 => Some("is locked"),
            8 => Some(
                "is read-only (flagd must be able to write the SQLite file and the -wal and -shm files beside it; /readyz names the one it cannot)",
            ),
            10 => Some("had an I/O error"),
            13 => Some("is full"),
            14 => Some("cannot open its file"),
            _ => None,
        };
    }
    match code {
        "53100" => Some("is full"),
        "25006" => Some("is read-only"),
        "55P03" | "40P01" => Some("is locked"),
        c if c.starts_with("08") || c.starts_with("57P") => Some("is unreachable"),
        c if c.starts_with("53") => Some("is out of resources"),
        _ => None,
    }
}
