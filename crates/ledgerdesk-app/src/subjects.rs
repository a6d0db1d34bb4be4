//! Data subjects: the person personal data in the log belongs to.
//!
//! Events carry a random subject id (UUID v7) instead of the customer's
//! email. The email → subject mapping lives in the `data_subjects` table,
//! outside the immutable log, so a subject can later be erased without
//! rewriting history (migration `0002_data_subjects.sql`).

use ledgerdesk_store::{subjects, DbPool};
use uuid::Uuid;

use crate::error::AppError;

/// The form an email is filed under: trimmed and lowercased, so
/// `" Ann@Example.COM "` and `"ann@example.com"` are one subject.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The subject of `email`, created if it has none yet.
///
/// Race-safe: insert-if-absent, then read back whichever row won, so two
/// concurrent first tickets from one address share a subject.
pub async fn resolve(pool: &DbPool, email: &str) -> Result<Uuid, AppError> {
    let email = normalise_email(email);
    let now = chrono::Utc::now().timestamp_micros();
    let id = subjects::file_email(pool, Uuid::now_v7(), &email, now).await?;
    parse(&id)
}

/// The subject of `email`, if it has one.
pub async fn find(pool: &DbPool, email: &str) -> Result<Option<Uuid>, AppError> {
    let found = subjects::find_email(pool, &normalise_email(email)).await?;
    found.as_deref().map(parse).transpose()
}

fn parse(id: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(id).map_err(|e| AppError::from(sqlx::Error::Decode(Box::new(e))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(
            super::normalise_email("  Ann@Example.COM "),
            "ann@example.com"
        );
    }
}
