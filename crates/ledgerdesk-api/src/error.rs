//! [`ApiError`]: the one error every handler and middleware returns, sent as
//! `application/problem+json` (RFC 9457). Its single `status_code` match is
//! the whole mapping from failure to HTTP status; causes of 500s are logged
//! with `tracing` and never sent.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use ledgerdesk_app::AppError;
use serde::Serialize;
use utoipa::ToSchema;

/// The base of every problem `type`; the code follows, with `-` for `_`.
pub const PROBLEM_BASE: &str = "https://ledgerdesk.dev/problems/";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or mistyped input that never reached the domain. 400.
    #[error("{detail}")]
    BadRequest {
        /// Stable code, e.g. `malformed_json`.
        code: &'static str,
        /// The offending field (a dotted path), when there is one.
        field: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// No valid token. 401.
    #[error("{detail}")]
    Unauthorized {
        /// What is wrong.
        detail: &'static str,
    },
    /// Authenticated, but the role may not do this. 403.
    #[error("{detail}")]
    Forbidden {
        /// What is refused.
        detail: String,
    },
    /// The addressed thing or route does not exist. 404.
    #[error("{detail}")]
    NotFound {
        /// Stable code, e.g. `ticket_not_found`.
        code: &'static str,
        /// What was not found.
        detail: String,
    },
    /// The addressed thing existed and was destroyed on purpose (an
    /// erasure). 410.
    #[error("{detail}")]
    Gone {
        /// Stable code, e.g. `file_erased`.
        code: &'static str,
        /// What is gone, and why.
        detail: String,
    },
    /// The route exists but not with this method. 405, with `Allow`.
    #[error("this route answers {allow} only")]
    MethodNotAllowed {
        /// The methods the route answers, as in `Allow`.
        allow: String,
    },
    /// The request conflicts with another one or with existing data. 409.
    #[error("{detail}")]
    Conflict {
        /// Stable code, e.g. `email_taken`.
        code: &'static str,
        /// What conflicts.
        detail: String,
    },
    /// `If-Match` names a version the stream is no longer at. 412.
    #[error("the stream is at version {current}, not the one in If-Match")]
    PreconditionFailed {
        /// The stream's version now.
        current: u64,
    },
    /// The body is larger than allowed. 413.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The body is not in a media type this endpoint reads. 415.
    #[error("{detail}")]
    UnsupportedMediaType {
        /// What was expected.
        detail: String,
    },
    /// Well-formed input a business rule refused. 422.
    #[error("{detail}")]
    Unprocessable {
        /// Stable code, e.g. `ticket_closed` (the domain's).
        code: &'static str,
        /// The offending field.
        field: Option<String>,
        /// Why.
        detail: String,
    },
    /// Too many failed logins; retry later. 429.
    #[error("too many failed logins; retry in {retry_after} seconds")]
    TooManyRequests {
        /// Seconds until an attempt is considered again.
        retry_after: u64,
    },
    /// Too many requests of another kind (e.g. live streams); retry later. 429.
    #[error("{detail}")]
    Limited {
        /// Stable code, e.g. `too_many_streams`.
        code: &'static str,
        /// What is limited.
        detail: &'static str,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The server is too busy to take this request now. 503.
    #[error("{detail}")]
    Busy {
        /// Stable code, e.g. `verifier_busy`.
        code: &'static str,
        /// What is busy.
        detail: &'static str,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The database is unreachable, restarting or busy beyond its lock
    /// timeout: nothing was done, retry after `Retry-After` seconds. 503.
    /// The cause is logged, never sent.
    #[error(
        "the database is unavailable; retry in {} seconds",
        UNAVAILABLE_RETRY_AFTER
    )]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Our failure: logged, never described to the client. 500.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// `Retry-After` of a 503: a restarting database is usually back within
/// seconds, and a client retrying at once would only add load.
pub const UNAVAILABLE_RETRY_AFTER: u64 = 2;

/// Whether the database being out of reach or busy caused `error`, looked
/// for along its whole chain and through the wrappers that forward
/// `source()` to their inner error (`#[error(transparent)]`).
fn database_unavailable(error: &(dyn std::error::Error + 'static)) -> bool {
    use ledgerdesk_projections::ProjectionError;
    use ledgerdesk_store::{AuditError, StoreError};
    let mut next = Some(error);
    while let Some(e) = next {
        let store = e
            .downcast_ref::<StoreError>()
            .or_else(|| match e.downcast_ref::<AppError>() {
                Some(AppError::Store(s)) => Some(s),
                _ => None,
            })
            .or_else(|| match e.downcast_ref::<AuditError>() {
                Some(AuditError::Store(s)) => Some(s),
                _ => None,
            })
            .or_else(|| match e.downcast_ref::<ProjectionError>() {
                Some(ProjectionError::Store(s)) => Some(s),
                _ => None,
            });
        if store.is_some_and(StoreError::is_unavailable) {
            return true;
        }
        let sqlx =
            e.downcast_ref::<sqlx::Error>()
                .or_else(|| match e.downcast_ref::<ProjectionError>() {
                    Some(ProjectionError::Database(s)) => Some(s),
                    _ => None,
                });
        if sqlx.is_some_and(ledgerdesk_store::is_unavailable) {
            return true;
        }
        next = e.source();
    }
    false
}

/// An RFC 9457 problem document, as sent with every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Stable URI of the problem type, e.g.
    /// `https://ledgerdesk.dev/problems/ticket-closed`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this occurrence.
    pub detail: String,
    /// The machine code the `type` ends with (`ticket_closed`).
    pub code: String,
    /// The offending input field, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// An internal failure with its cause (logged when answered); a 503
    /// instead when the cause is the database being unavailable, so every
    /// path to a 500 tells "down, retry" apart from "broken".
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let e = e.into();
        if database_unavailable(e.as_ref()) {
            ApiError::Unavailable(e)
        } else {
            ApiError::Internal(e)
        }
    }

    /// A 400 naming a field.
    pub fn bad_field(field: &str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code: "invalid_input",
            field: Some(field.to_string()),
            detail: detail.into(),
        }
    }

    /// A 422 naming a field.
    pub fn unprocessable(code: &'static str, field: &str, detail: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            code,
            field: Some(field.to_string()),
            detail: detail.into(),
        }
    }

    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Gone { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unprocessable { code, .. }
            | ApiError::Limited { code, .. }
            | ApiError::Busy { code, .. } => code,
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PreconditionFailed { .. } => "precondition_failed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Unavailable(_) => "database_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<String> {
        match self {
            ApiError::BadRequest { field, .. } | ApiError::Unprocessable { field, .. } => {
                field.clone()
            }
            _ => None,
        }
    }

    /// The problem document for this error.
    pub fn problem(&self) -> Problem {
        let code = self.code();
        Problem {
            type_: format!("{PROBLEM_BASE}{}", code.replace('_', "-")),
            title: title(code),
            status: self.status_code().as_u16(),
            detail: self.to_string(),
            code: code.to_string(),
            field: self.field(),
        }
    }
}

/// `ticket_closed` → `Ticket closed`: the same for every occurrence of a type.
fn title(code: &str) -> String {
    let words = code.replace('_', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "request failed");
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %error_chain(cause.as_ref()), "database unavailable");
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        match self {
            ApiError::Unauthorized { .. } => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::TooManyRequests { retry_after }
            | ApiError::Limited { retry_after, .. }
            | ApiError::Busy { retry_after, .. } => {
                response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            ApiError::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, allow.as_str()));
            }
            ApiError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER.to_string()));
            }
            _ => {}
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        response.body(body)
    }
}

/// `error: cause: cause …`, for the log.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            // Text the store cannot keep is malformed input, refused at
            // the edge as 400 too (extract.rs); the domain's own refusal
            // covers text that arrives outside a JSON body.
            AppError::Rejected(refusal)
                if refusal.code == ledgerdesk_domain::fields::CONTROL_CHARACTER =>
            {
                ApiError::BadRequest {
                    code: refusal.code,
                    field: refusal.field.map(str::to_string),
                    detail: refusal.message,
                }
            }
            AppError::Rejected(refusal) => ApiError::Unprocessable {
                code: refusal.code,
                field: refusal.field.map(str::to_string),
                detail: refusal.message,
            },
            AppError::NotFound { .. } => ApiError::NotFound {
                code: e.code(),
                detail: e.to_string(),
            },
            AppError::Conflict { .. } => ApiError::Conflict {
                code: "conflict",
                detail: "the resource kept changing; send the request again".into(),
            },
            AppError::AlreadyErased { .. } | AppError::EmailTaken => ApiError::Conflict {
                code: e.code(),
                detail: e.to_string(),
            },
            AppError::PreconditionFailed { current } => ApiError::PreconditionFailed { current },
            AppError::Invalid { field, message } => ApiError::BadRequest {
                code: "invalid_input",
                field: Some(field.to_string()),
                detail: message,
            },
            AppError::Store(e) => ApiError::internal(e),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<ledgerdesk_store::StoreError> for ApiError {
    fn from(e: ledgerdesk_store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerdesk_app::DomainRefusal;

    #[test]
    fn refusals_keep_code_and_field_and_become_422() {
        let e = ApiError::from(AppError::Rejected(DomainRefusal {
            code: "ticket_closed",
            field: Some("status"),
            message: "ticket is closed".into(),
        }));
        assert_eq!(e.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
        let p = e.problem();
        assert_eq!(p.type_, "https://ledgerdesk.dev/problems/ticket-closed");
        assert_eq!(p.title, "Ticket closed");
        assert_eq!(p.field.as_deref(), Some("status"));
    }

    #[test]
    fn each_app_error_has_its_http_status_and_code() {
        let id = uuid::Uuid::nil();
        let cases = [
            (
                AppError::NotFound {
                    what: "subject",
                    id,
                },
                404,
                "subject_not_found",
            ),
            (
                AppError::Conflict {
                    stream_id: "user-x".into(),
                    attempts: 5,
                },
                409,
                "conflict",
            ),
            (AppError::EmailTaken, 409, "email_taken"),
            (
                AppError::AlreadyErased { subject: id },
                409,
                "already_erased",
            ),
            (
                AppError::PreconditionFailed { current: 3 },
                412,
                "precondition_failed",
            ),
            (
                AppError::Invalid {
                    field: "actor",
                    message: "missing".into(),
                },
                400,
                "invalid_input",
            ),
        ];
        for (error, status, code) in cases {
            let e = ApiError::from(error);
            assert_eq!(e.status_code().as_u16(), status, "{e:?}");
            assert_eq!(e.problem().code, code, "{e:?}");
        }
    }

    #[test]
    fn an_unavailable_database_is_a_503_with_retry_after_on_every_path() {
        use ledgerdesk_store::StoreError;
        let causes: Vec<ApiError> = vec![
            ApiError::from(sqlx::Error::PoolTimedOut),
            ApiError::from(StoreError::from(sqlx::Error::PoolClosed)),
            ApiError::from(AppError::Store(StoreError::from(sqlx::Error::Io(
                std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            )))),
            ApiError::from(ledgerdesk_projections::ProjectionError::Database(
                sqlx::Error::PoolTimedOut,
            )),
            ApiError::from(ledgerdesk_store::AuditError::Store(StoreError::from(
                sqlx::Error::PoolTimedOut,
            ))),
        ];
        for e in causes {
            assert_eq!(e.status_code(), StatusCode::SERVICE_UNAVAILABLE, "{e:?}");
            assert_eq!(e.code(), "database_unavailable");
            let response = e.error_response();
            assert_eq!(
                response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap()),
                Some(UNAVAILABLE_RETRY_AFTER.to_string().as_str())
            );
            assert!(
                !e.problem().detail.contains("pool"),
                "the cause is not sent"
            );
        }
        // A database that answered and refused is still our 500.
        let e = ApiError::from(sqlx::Error::RowNotFound);
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        let e = ApiError::from(AppError::Store(StoreError::Closed));
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let e = ApiError::internal("password=hunter2 in SQL");
        let p = e.problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("hunter2"));
    }
}
