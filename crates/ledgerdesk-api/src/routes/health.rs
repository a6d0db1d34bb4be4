//! Liveness, readiness, metrics and the OpenAPI document: the public routes
//! for load balancers, orchestrators, scrapers and client generators.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::state::AppState;

/// A health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready`, `degraded` or `unavailable`.
    pub status: String,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Up", body = Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The database answers; `degraded` when a projection is failed.
///
/// A failed projection keeps the answer 200: the server still takes
/// commands and serves every other read model, and a load balancer that
/// took it out would take out all of them (every server reads the same
/// failed projection). The body says why (`reasons`), for monitoring to
/// alert on; `ledgerdesk_projection_failed` says it too.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready, or degraded (`status: degraded`, with `reasons`) when a projection is failed", body = Health),
        (status = 503, description = "The database does not answer", body = Health),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness check failed");
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "unavailable", "reason": "database unreachable" }));
    }
    let backend = state.store.backend();
    match state.projector.failures().await {
        Ok(failures) if failures.is_empty() => {
            HttpResponse::Ok().json(json!({ "status": "ready", "backend": backend }))
        }
        Ok(failures) => {
            // The error itself stays behind the admin endpoint: this one
            // is public, and a database message can quote a value.
            let reasons: Vec<String> = failures
                .iter()
                .map(|(name, f)| {
                    format!(
                        "projection {name} failed at position {}; see GET /api/v1/admin/projections",
                        f.position
                    )
                })
                .collect();
            HttpResponse::Ok()
                .json(json!({ "status": "degraded", "backend": backend, "reasons": reasons }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the projections' failures");
            HttpResponse::Ok().json(json!({
                "status": "degraded",
                "backend": backend,
                "reasons": ["the projections' state cannot be read"],
            }))
        }
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Metrics", content_type = "text/plain; version=0.0.4", body = String))
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
