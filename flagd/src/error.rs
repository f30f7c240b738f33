//! One JSON shape for every error the API returns:
//! `{"error": {"code": "...", "message": "...", "details": [{"path": "...", "message": "..."}]}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flagd_core::Problem;
use serde_json::json;

/// An error answered to an API client. Internal errors are logged and never echoed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be read (malformed JSON, a bad parameter).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or an unknown or revoked one.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token's role or environments do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 403: a change made with a session cookie without the session's CSRF token.
    #[error("{0}")]
    Csrf(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: the change was based on a version that is no longer the head, or the thing
    /// exists already.
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// The environment's head version, when the conflict is about versions.
        current_version: Option<u64>,
    },
    /// 409: the change was based on a flag's last change (`If-Flag-Version`) that is no
    /// longer its last.
    #[error("{message}")]
    FlagConflict {
        /// What conflicts.
        message: String,
        /// The version that last changed the flag.
        current_flag_version: u64,
    },
    /// 409: the environment is protected and the change was not approved (and is not
    /// a break-glass action).
    #[error("{0}")]
    ApprovalRequired(String),
    /// 413: the body is larger than the server accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 422: well-formed JSON that is not acceptable, with every problem and its path.
    #[error("{message}")]
    Invalid {
        /// A summary.
        message: String,
        /// Every problem, each with its JSON path.
        details: Vec<Problem>,
    },
    /// 503: the store cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or a broken store; logged, not shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        match e {
            S::NotFound(m) => Self::NotFound(m),
            S::Conflict {
                message,
                current_version,
            } => Self::Conflict {
                message,
                current_version,
            },
            S::Invalid { message, details } => Self::Invalid { message, details },
            S::ApprovalRequired(m) => Self::ApprovalRequired(m),
            S::Unavailable(m) => Self::Unavailable(m),
            S::Internal(e) => Self::Internal(e),
        }
    }
}

impl ApiError {
    /// A 422 for one problem at one path (the same shape the store answers with).
    pub fn invalid(path: &str, message: impl Into<String>) -> Self {
        crate::store::StoreError::invalid(path, message).into()
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::Csrf(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } | Self::FlagConflict { .. } | Self::ApprovalRequired(_) => {
                StatusCode::CONFLICT
            }
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::Csrf(_) => "csrf",
            Self::NotFound(_) => "not_found",
            Self::Conflict { .. } | Self::FlagConflict { .. } => "conflict",
            Self::ApprovalRequired(_) => "approval_required",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::Invalid { .. } => "invalid",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                "internal error; see the server log".to_owned()
            }
            other => other.to_string(),
        };
        let mut error = json!({"code": self.code(), "message": message});
        if let Self::Invalid { details, .. } = &self {
            error["details"] = json!(details);
        }
        if let Self::FlagConflict {
            current_flag_version,
            ..
        } = &self
        {
            error["currentFlagVersion"] = json!(current_flag_version);
        }
        if let Self::Conflict {
            current_version: Some(v),
            ..
        } = &self
        {
            error["currentVersion"] = json!(v);
        }
        let mut resp = (status, axum::Json(json!({"error": error}))).into_response();
        if let Self::Unavailable(_) = &self {
            // A store fault passes: clients may try again shortly.
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if let Self::Conflict {
            current_version: Some(v),
            ..
        } = &self
            && let Ok(h) = axum::http::HeaderValue::from_str(&format!("\"{v}\""))
        {
            resp.headers_mut().insert(axum::http::header::ETAG, h);
        }
        resp
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;
