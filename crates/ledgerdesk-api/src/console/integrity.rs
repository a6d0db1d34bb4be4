//! The integrity page: the full verification (on request: it reads the
//! whole log), the latest signed checkpoints and the key they are signed
//! with, the inclusion proof of any event, and evidence bundles to check
//! offline. Each through the code of its API route or CLI command
//! ([`ledger::audit_report`], [`ledger::inclusion`],
//! [`ledgerdesk_store::export_bundle`]).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::Utc;
use ledgerdesk_store::checkpoint::{
    checkpoints as list_checkpoints, CheckpointRange, PublicKeyInfo,
};
use ledgerdesk_store::{export_bundle, latest_checkpoint};

use crate::error::ApiError;
use crate::routes::ledger::{self, AuditBody, InclusionProofBody, SignedCheckpoint};
use crate::state::AppState;

use super::page::{html, Chrome, PageResult};

/// Checkpoints listed, newest first.
const RECENT: u64 = 10;

#[derive(Template)]
#[template(path = "console/integrity.html")]
struct IntegrityPage {
    chrome: Option<Chrome>,
    report: Option<AuditBody>,
    checkpoints: Vec<SignedCheckpoint>,
    key: PublicKeyInfo,
    position: String,
    proof: Option<InclusionProofBody>,
    proof_error: Option<String>,
    from: String,
    to: String,
    bundle_error: Option<String>,
}

fn param(req: &HttpRequest, key: &str) -> String {
    form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

fn position(name: &str, text: &str) -> Result<u64, ApiError> {
    crate::routes::parse_position(name, text)
}

async fn recent(state: &AppState) -> Result<Vec<SignedCheckpoint>, ApiError> {
    let store = state.raw_store.as_ref();
    let Some(latest) = latest_checkpoint(store).await? else {
        return Ok(Vec::new());
    };
    let mut found = list_checkpoints(
        store,
        CheckpointRange {
            after_seq: latest.seq.saturating_sub(RECENT),
            since: None,
            until: None,
            limit: RECENT as usize,
        },
    )
    .await?;
    found.reverse();
    Ok(found.into_iter().map(SignedCheckpoint::from).collect())
}

async fn render(state: &AppState, req: &HttpRequest, bundle_error: Option<String>) -> PageResult {
    let chrome = Chrome::of(state, req, "/console/integrity").await?;
    let report = match param(req, "verify").as_str() {
        "" => None,
        _ => Some(ledger::audit_report(state).await?),
    };
    let checkpoints = recent(state).await?;
    let mut page = IntegrityPage {
        chrome: Some(chrome),
        report,
        key: state.public_key.info(),
        position: param(req, "position"),
        proof: None,
        proof_error: None,
        from: param(req, "from"),
        to: param(req, "to"),
        bundle_error,
        checkpoints,
    };
    if page.from.is_empty() {
        page.from = "1".into();
    }
    if page.to.is_empty() {
        page.to = page
            .checkpoints
            .first()
            .map_or(String::new(), |c| c.tree_size.to_string());
    }
    let mut status = StatusCode::OK;
    if !page.position.is_empty() {
        let proved = match position("position", &page.position) {
            Ok(p) => ledger::inclusion(state, p, None).await,
            Err(e) => Err(e),
        };
        match proved {
            Ok(p) => page.proof = Some(p),
            Err(e @ (ApiError::BadRequest { .. } | ApiError::NotFound { .. })) => {
                status = actix_web::ResponseError::status_code(&e);
                page.proof_error = Some(e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if page.bundle_error.is_some() {
        status = StatusCode::BAD_REQUEST;
    }
    Ok(html(status, &page))
}

/// `GET /console/integrity`.
pub async fn page(state: web::Data<AppState>, req: HttpRequest) -> PageResult {
    render(&state, &req, None).await
}

/// `GET /console/integrity/bundle?from=&to=`: the evidence bundle of a
/// range, the file `ledgerdesk export` writes.
pub async fn bundle(state: web::Data<AppState>, req: HttpRequest) -> PageResult {
    let range = (|| {
        let from = position("from", &param(&req, "from"))?;
        let to = position("to", &param(&req, "to"))?;
        Ok::<_, ApiError>((from, to))
    })();
    let built = match range {
        Ok((from, to)) => export_bundle(state.raw_store.as_ref(), from, to, &state.public_key)
            .await
            .map(|b| (from, to, b))
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let (from, to, bundle) = match built {
        Ok(b) => b,
        // A range the log cannot prove is said on the page, by the form.
        Err(e @ (ApiError::BadRequest { .. } | ApiError::NotFound { .. })) => {
            return render(&state, &req, Some(e.to_string())).await;
        }
        Err(e) => return Err(e.into()),
    };
    let body = serde_json::to_vec_pretty(&bundle).map_err(ApiError::internal)?;
    let name = format!(
        "ledgerdesk-evidence-{from}-{to}-{}.json",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}
