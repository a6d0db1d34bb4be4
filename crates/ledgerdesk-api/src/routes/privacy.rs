//! Erasure without rewriting history: `POST /admin/erasure` destroys a data
//! subject's key (crypto-shredding). The log keeps every byte, so its hash
//! chain and signed checkpoints still verify; every view, export and
//! rebuild reads `[erased]` where that person's data was. Files attached to
//! their tickets are destroyed with it, unless a held subject's ticket
//! holds the same bytes.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{Cx, Json};
use crate::routes;
use crate::state::AppState;

/// Whose personal data to erase: the data subject id (tickets show it as
/// `data_subject`) or the email address it was filed under. One of the two.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    /// The data subject.
    #[serde(default)]
    pub subject: Option<Uuid>,
    /// Or their email address.
    #[serde(default)]
    #[schema(example = "carol@example.com")]
    pub email: Option<String>,
}

/// What was erased, and the event that records it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureResult {
    /// The data subject whose key was destroyed.
    pub subject: Uuid,
    /// Always `true`.
    pub erased: bool,
    /// The log position of the `user.personal_data_erased` event.
    pub position: u64,
}

/// Erase a data subject's personal data (admin).
#[utoipa::path(
    post,
    path = "/api/v1/admin/erasure",
    tag = "privacy",
    request_body = ErasureRequest,
    responses(
        (status = 200, description = "The key and the files only their tickets held are destroyed, and the erasure recorded", body = ErasureResult),
        (status = 404, description = "No personal data is filed under that subject or email", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The subject's personal data is already erased", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn erase(
    state: web::Data<AppState>,
    cx: Cx,
    Json(body): Json<ErasureRequest>,
) -> Result<HttpResponse, ApiError> {
    let subject = match (body.subject, body.email.as_deref()) {
        (Some(subject), None) => subject,
        (None, Some(email)) => {
            state
                .helpdesk
                .data_subject(email)
                .await?
                .ok_or_else(|| ApiError::NotFound {
                    code: "subject_not_found",
                    detail: "no personal data is filed under that email address (or it was erased)"
                        .into(),
                })?
        }
        _ => {
            return Err(ApiError::bad_field(
                "subject",
                "give exactly one of subject (a data subject id) and email",
            ))
        }
    };
    // Uploads wait while this erasure runs (see `AppState::files_lock`).
    let _files = state.files_lock.lock().await;
    let erased = state
        .helpdesk
        .erase_subject(&state.vault, &cx.actor, subject, |subject| {
            routes::files::erase_files_of(&state, subject)
        })
        .await?;
    let outcome = erased.outcome;
    Ok(HttpResponse::Ok().json(ErasureResult {
        subject,
        erased: true,
        position: outcome.position,
    }))
}
