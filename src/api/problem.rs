//! RFC 9457 problem details: every error the API returns, with a stable
//! `type` (`urn:trailmark:problem:<slug>`), a title, and a detail that says
//! what to fix. Internal causes are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::identity::IdentityError;
use crate::ledger::EntryError;
use crate::sequencer::AppendError;
use crate::store::StoreError;

/// An API error as problem+json.
#[derive(Debug)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable slug, the last part of `type`.
    pub slug: &'static str,
    /// Short, fixed summary of the problem type.
    pub title: &'static str,
    /// This occurrence: what went wrong and what to do.
    pub detail: String,
    /// Extension members (e.g. `field`, `original_seq`).
    pub extra: Map<String, Value>,
    /// Seconds for `Retry-After`.
    pub retry_after_s: Option<u32>,
}

impl Problem {
    /// A problem with no extension members.
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            slug,
            title,
            detail: detail.into(),
            extra: Map::new(),
            retry_after_s: None,
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Problem {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// 400: the body is not JSON of the expected shape.
    pub fn bad_json(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "The request body is not valid JSON of the expected shape",
            detail,
        )
    }

    /// 400: a query parameter is invalid.
    pub fn bad_query(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "A query parameter is invalid",
            detail,
        )
    }

    /// 401: no valid credential.
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "A valid credential is required",
            detail,
        )
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such resource",
            detail,
        )
    }

    /// 500 for an internal failure; the cause is logged, not sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Problem {
        tracing::error!(error = %cause, "internal error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server failed; the cause is in its log. Nothing was written by this request.",
        )
    }
}

impl From<EntryError> for Problem {
    fn from(e: EntryError) -> Problem {
        let p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-entry",
            "The entry is not valid",
            e.to_string(),
        );
        match e {
            EntryError::Field { field, .. } => p.with("field", field),
            EntryError::Json(_) => p,
        }
    }
}

impl From<AppendError> for Problem {
    fn from(e: AppendError) -> Problem {
        match &e {
            AppendError::QueueFull => {
                let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "queue-full", "The ledger is busy", e.to_string());
                p.retry_after_s = Some(1);
                p
            }
            AppendError::Conflict { original_seq, key } => {
                Problem::new(StatusCode::CONFLICT, "idempotency-conflict", "The idempotency key was used for different content", format!("{e}; send new content with a new key, or the original content to get the original entry back"))
                    .with("original_seq", original_seq.get())
                    .with("idempotency_key", key.clone())
            }
            AppendError::UnknownParent(h) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-parent", "A parent is not an entry of this ledger", format!("{e}; name parents by the hash returned when they were appended"))
                .with("field", "parents")
                .with("parent", h.to_hex()),
            AppendError::BadParentRef { .. } => Problem::internal(&e),
            AppendError::Invalid(inner) => Problem::from(inner.clone()),
            AppendError::Unavailable(_) => {
                let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "The ledger cannot accept writes now", e.to_string());
                p.retry_after_s = Some(5);
                p
            }
        }
    }
}

impl From<IdentityError> for Problem {
    fn from(e: IdentityError) -> Problem {
        let (status, slug, title) = match &e {
            IdentityError::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-request",
                "The request is not valid",
            ),
            IdentityError::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "A valid credential is required",
            ),
            IdentityError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Not allowed"),
            IdentityError::Locked(_) => (
                StatusCode::FORBIDDEN,
                "account-locked",
                "The account is locked",
            ),
            IdentityError::PasswordChangeRequired(_) => (
                StatusCode::FORBIDDEN,
                "password-change-required",
                "The password must be changed first",
            ),
            IdentityError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "No such resource"),
            IdentityError::Conflict(_) => (
                StatusCode::CONFLICT,
                "conflict",
                "The change conflicts with the current state",
            ),
            IdentityError::Append(a) => return Problem::from(a.clone()),
            IdentityError::Store(s) => return Problem::internal(s),
        };
        Problem::new(status, slug, title, e.to_string())
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        Problem::internal(&e)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            format!("urn:trailmark:problem:{}", self.slug).into(),
        );
        body.insert("title".into(), self.title.into());
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.into());
        body.extend(self.extra);
        let mut response = (
            self.status,
            serde_json::to_string(&Value::Object(body)).unwrap_or_default(),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"trailmark\""),
            );
        }
        response
    }
}
