//! Attachments: the bytes are stored once per SHA-256 under `files.dir`
//! (`<dir>/<first two hex>/<sha256>`), outside the event log; the
//! `ticket.file_attached` event records name, type, size and hash.
//!
//! An upload is written to `tmp/` and reaches its content address only
//! after the attachment was recorded, so a refused upload leaves nothing
//! behind. `api_file_subjects` records whose tickets each file is attached
//! to; erasing a subject destroys the files no held subject shares
//! (`docs/privacy.md`), and their downloads answer 410 Gone.

use std::path::{Path, PathBuf};

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use ledgerdesk_app::SubjectStatus;
use ledgerdesk_domain::ticket::TicketAction;
use ledgerdesk_store::files;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::Cx;
use crate::routes::{command_ok, CommandResult, IdPath};
use crate::state::AppState;

/// The multipart form of an upload.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The file; its filename and content type are recorded.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// The `{sha256}` of a file.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ShaPath {
    /// 64 lowercase hex characters.
    pub sha256: String,
}

fn stored_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(&sha256[..2]).join(sha256)
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

struct Stored {
    name: String,
    content_type: String,
    size: u64,
    sha256: String,
    tmp: TmpFile,
}

/// An upload not yet kept: removed when dropped, whether the request was
/// refused, failed or cancelled half-way; a no-op once it was moved.
struct TmpFile(PathBuf);

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Write the `file` part to a temporary file while hashing.
async fn store_upload(state: &AppState, mut form: Multipart) -> Result<Stored, ApiError> {
    let bad = |detail: String| ApiError::BadRequest {
        code: "invalid_upload",
        field: Some("file".into()),
        detail,
    };
    let io = |e: std::io::Error| ApiError::internal(e);
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| bad(e.to_string()))?;
        let disposition = field.content_disposition().cloned();
        let name = disposition
            .as_ref()
            .and_then(|d| d.get_name())
            .unwrap_or("");
        if name != "file" {
            // Drain and ignore other parts.
            while let Some(chunk) = field.next().await {
                chunk.map_err(|e| bad(e.to_string()))?;
            }
            continue;
        }
        let filename = disposition
            .as_ref()
            .and_then(|d| d.get_filename())
            .unwrap_or("upload")
            .to_string();
        let content_type = field
            .content_type()
            .map_or_else(|| "application/octet-stream".to_string(), |m| m.to_string());
        let tmp_dir = state.files_dir.join("tmp");
        tokio::fs::create_dir_all(&tmp_dir).await.map_err(io)?;
        let tmp = TmpFile(tmp_dir.join(uuid::Uuid::now_v7().to_string()));
        let mut out = tokio::fs::File::create(&tmp.0).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let written: Result<(), ApiError> = async {
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(|e| bad(e.to_string()))?;
                size += chunk.len() as u64;
                if size > state.max_file_bytes {
                    return Err(ApiError::PayloadTooLarge {
                        limit: state.max_file_bytes,
                    });
                }
                hasher.update(&chunk);
                out.write_all(&chunk).await.map_err(io)?;
            }
            out.flush().await.map_err(io)?;
            Ok(())
        }
        .await;
        drop(out);
        written?;
        let sha256 = hex::encode(hasher.finalize());
        // The form yields the next part only once this one is dropped.
        drop(field);
        // Drain whatever parts follow.
        while let Some(field) = form.next().await {
            let mut field = field.map_err(|e| bad(e.to_string()))?;
            while let Some(chunk) = field.next().await {
                chunk.map_err(|e| bad(e.to_string()))?;
            }
        }
        return Ok(Stored {
            name: filename,
            content_type,
            size,
            sha256,
            tmp,
        });
    }
    Err(bad("the form has no `file` part".into()))
}

/// Index the recorded upload, link it to the ticket's data subject, and
/// move its bytes to their content address. The index and link come first,
/// so an erasure running meanwhile sees a held subject sharing the file.
async fn keep_upload(
    state: &AppState,
    stored: &Stored,
    subject: Option<uuid::Uuid>,
) -> Result<(), ApiError> {
    files::insert_file(
        &state.store.db(),
        &stored.sha256,
        stored.size as i64,
        &stored.content_type,
    )
    .await?;
    if let Some(subject) = subject {
        files::link_file(&state.store.db(), &stored.sha256, subject).await?;
    }
    let target = stored_path(&state.files_dir, &stored.sha256);
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(ApiError::internal)?;
    }
    if !tokio::fs::try_exists(&target).await.unwrap_or(false) {
        tokio::fs::rename(&stored.tmp.0, &target)
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(())
}

/// Destroy the files attached to `subject`'s tickets that no ticket of a
/// held subject shares; returns how many. Safe to repeat.
pub async fn erase_files_of(state: &AppState, subject: uuid::Uuid) -> Result<usize, ApiError> {
    let shas = files::erase_files_of(&state.store.db(), subject).await?;
    for sha in &shas {
        // An upload of the same bytes to a held ticket since then has made
        // the file available again: its bytes stay.
        if files::file(&state.store.db(), sha)
            .await?
            .is_some_and(|f| !f.erased)
        {
            continue;
        }
        match tokio::fs::remove_file(stored_path(&state.files_dir, sha)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    Ok(shas.len())
}

/// 422 when `subject` was erased: personal data sent about an erased
/// subject is not kept, and for a file that means not accepting its bytes.
async fn refuse_if_erased(state: &AppState, subject: Option<uuid::Uuid>) -> Result<(), ApiError> {
    let Some(subject) = subject else {
        return Ok(());
    };
    if state.vault.status(subject).await? == SubjectStatus::Erased {
        return Err(ApiError::unprocessable(
            "subject_erased",
            "file",
            "the personal data of this ticket's requester was erased; files are no longer kept for it",
        ));
    }
    Ok(())
}

/// Attach a file (`Ticket – File`): `multipart/form-data` with a `file` part.
#[utoipa::path(
    post,
    path = "/api/v1/tickets/{id}/files",
    tag = "tickets",
    params(IdPath),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "Attached; item is the file id; download it from /api/v1/files/{sha256}", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn upload(
    req: HttpRequest,
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<IdPath>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // The form's own overhead is small; refuse what cannot fit early.
    if declared.is_some_and(|n| n > state.max_file_bytes + 64 * 1024) {
        return Err(ApiError::PayloadTooLarge {
            limit: state.max_file_bytes,
        });
    }
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_multipart {
        return Err(ApiError::UnsupportedMediaType {
            detail: "send the file as multipart/form-data with a `file` part".into(),
        });
    }
    let Some((ticket, _)) = state.helpdesk.ticket(path.id).await? else {
        return Err(ApiError::NotFound {
            code: "ticket_not_found",
            detail: format!("ticket {} does not exist", path.id),
        });
    };
    let subject = ticket.requester_subject;
    // Early, so the bytes of an erased subject are not even read.
    refuse_if_erased(&state, subject).await?;
    let form = Multipart::new(req.headers(), payload);
    let stored = store_upload(&state, form).await?;
    // Again under the lock an erasure holds: the subject may have been
    // erased while the body was read.
    let _kept = state.files_lock.lock().await;
    refuse_if_erased(&state, subject).await?;
    let attachment = TicketAction::AttachFile {
        file_id: uuid::Uuid::now_v7(),
        name: stored.name.clone(),
        content_type: stored.content_type.clone(),
        size: stored.size,
        sha256: stored.sha256.clone(),
    };
    // A refusal (stale If-Match, the domain's 422) drops `stored` and with
    // it the temporary file: nothing reaches the index or the store.
    let outcome = state
        .helpdesk
        .act(&cx.actor, path.id, cx.if_match, attachment)
        .await?;
    if let Err(e) = keep_upload(&state, &stored, subject).await {
        tracing::error!(sha256 = %stored.sha256, ticket = %path.id, "an attachment was recorded but its bytes were not kept");
        return Err(e);
    }
    Ok(command_ok(outcome))
}

/// Download a file by its SHA-256.
#[utoipa::path(
    get,
    path = "/api/v1/files/{sha256}",
    tag = "files",
    params(ShaPath),
    responses(
        (status = 200, description = "The bytes, with the content type given at upload",
            content_type = "*/*", body = Vec<u8>),
        (status = 410, description = "Destroyed by the erasure of its ticket's requester",
            body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn download(
    state: web::Data<AppState>,
    path: web::Path<ShaPath>,
) -> Result<HttpResponse, ApiError> {
    let sha256 = path.into_inner().sha256;
    if !is_sha256(&sha256) {
        return Err(ApiError::bad_field(
            "sha256",
            "a file is named by 64 lowercase hex characters",
        ));
    }
    let not_found = || ApiError::NotFound {
        code: "file_not_found",
        detail: format!("no file {sha256}"),
    };
    let row = files::file(&state.store.db(), &sha256)
        .await?
        .ok_or_else(not_found)?;
    if row.erased {
        return Err(ApiError::Gone {
            code: "file_erased",
            detail: format!(
                "file {sha256} was destroyed when the personal data of its ticket's requester was erased"
            ),
        });
    }
    let bytes = match tokio::fs::read(stored_path(&state.files_dir, &sha256)).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(ApiError::internal(e)),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, row.content_type))
        .insert_header((header::CONTENT_DISPOSITION, "attachment"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(bytes))
}
