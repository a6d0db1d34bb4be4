//! The application's one error type: refusals apart from failures.

use ledgerdesk_domain::{DepartmentError, FieldError, SettingsError, TicketError, UserError};
use ledgerdesk_store::StoreError;
use uuid::Uuid;

/// A business rule said no: the domain error reduced to what a client needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DomainRefusal {
    /// Stable machine code, e.g. `ticket_closed`, `field_too_long`.
    pub code: &'static str,
    /// The offending input field, when there is one.
    pub field: Option<&'static str>,
    /// Human-readable explanation (no personal data).
    pub message: String,
}

macro_rules! refusal_from {
    ($($error:ty),*) => {$(
        impl From<$error> for DomainRefusal {
            fn from(e: $error) -> Self {
                DomainRefusal {
                    code: e.code(),
                    field: e.field(),
                    message: e.to_string(),
                }
            }
        }
    )*};
}

refusal_from!(TicketError, UserError, DepartmentError, SettingsError);

impl From<FieldError> for DomainRefusal {
    fn from(e: FieldError) -> Self {
        DomainRefusal {
            code: e.code(),
            field: Some(e.field()),
            message: e.to_string(),
        }
    }
}

/// Why a command was not carried out.
///
/// Refusals (`Rejected`, `NotFound`, `PreconditionFailed`, `Invalid`) wrote
/// nothing and are the client's to fix; `Conflict` is worth retrying;
/// `Store` is our failure, and its detail must not reach the client.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A business rule refused the command. HTTP 422 Unprocessable Content,
    /// with `code` and `field` in the body.
    #[error("{0}")]
    Rejected(DomainRefusal),
    /// The ticket, user or department addressed does not exist. HTTP 404.
    #[error("{what} {id} does not exist")]
    NotFound {
        /// `ticket`, `user` or `department`.
        what: &'static str,
        /// Its id.
        id: Uuid,
    },
    /// Other writers kept changing the stream; every attempt lost the race.
    /// HTTP 409 Conflict: the client may simply try again.
    #[error("{stream_id} kept changing: gave up after {attempts} attempts")]
    Conflict {
        /// The contended stream.
        stream_id: String,
        /// How many times it was tried.
        attempts: u32,
    },
    /// The client's `expected_version` (`If-Match`) is not the stream's
    /// version; nothing was written. HTTP 412 Precondition Failed.
    #[error("the stream is at version {current}, not the expected one")]
    PreconditionFailed {
        /// The stream's version now.
        current: u64,
    },
    /// Input the domain never sees is unusable (e.g. an agent request
    /// without a user id). HTTP 400 Bad Request.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The event store or its database failed. HTTP 500; log the cause,
    /// do not send it. When the database is only unreachable or busy
    /// ([`StoreError::Unavailable`]), HTTP 503: the client may retry later.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another user has this email. HTTP 409.
    #[error("another user has this email")]
    EmailTaken,
    /// The data subject's personal data is already erased. HTTP 409.
    #[error("the personal data of data subject {subject} is already erased")]
    AlreadyErased {
        /// The data subject.
        subject: Uuid,
    },
}

impl AppError {
    /// A stable machine code for the response body.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Rejected(r) => r.code,
            AppError::NotFound { what, .. } => match *what {
                "ticket" => "ticket_not_found",
                "user" => "user_not_found",
                "department" => "department_not_found",
                "subject" => "subject_not_found",
                _ => "not_found",
            },
            AppError::Conflict { .. } => "conflict",
            AppError::AlreadyErased { .. } => "already_erased",
            AppError::EmailTaken => "email_taken",
            AppError::PreconditionFailed { .. } => "precondition_failed",
            AppError::Invalid { .. } => "invalid_input",
            AppError::Store(e) if e.is_unavailable() => "database_unavailable",
            AppError::Store(_) => "internal",
        }
    }

    pub(crate) fn rejected(e: impl Into<DomainRefusal>) -> Self {
        AppError::Rejected(e.into())
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Store(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_has_its_code() {
        let refusal = DomainRefusal::from(TicketError::Closed);
        assert_eq!(
            (refusal.code, refusal.field),
            ("ticket_closed", None::<&str>)
        );
        let cases = [
            (AppError::Rejected(refusal), "ticket_closed"),
            (
                AppError::NotFound {
                    what: "ticket",
                    id: Uuid::nil(),
                },
                "ticket_not_found",
            ),
            (
                AppError::Conflict {
                    stream_id: "ticket-x".into(),
                    attempts: 5,
                },
                "conflict",
            ),
            (
                AppError::PreconditionFailed { current: 3 },
                "precondition_failed",
            ),
            (
                AppError::Invalid {
                    field: "actor",
                    message: "missing".into(),
                },
                "invalid_input",
            ),
            (AppError::Store(StoreError::Closed), "internal"),
            (
                AppError::from(sqlx::Error::PoolTimedOut),
                "database_unavailable",
            ),
            (AppError::from(sqlx::Error::RowNotFound), "internal"),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error}");
        }
    }

    #[test]
    fn refusals_keep_the_domain_code_and_field() {
        let refusal = DomainRefusal::from(TicketError::RatingOutOfRange { rating: 9 });
        assert_eq!(refusal.code, "rating_out_of_range");
        assert_eq!(refusal.field, Some("rating"));
        assert!(refusal.message.contains('9'));
    }
}
