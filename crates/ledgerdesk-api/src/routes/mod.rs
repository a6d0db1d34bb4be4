//! One module per resource; [`configure`] mounts them all. Every route here
//! has a row in [`crate::permissions::PERMISSIONS`] and an OpenAPI entry
//! in [`crate::openapi`]; a test checks the three agree.

pub mod audit;
pub mod auth;
pub mod departments;
pub mod files;
pub mod health;
pub mod ledger;
pub mod privacy;
pub mod settings;
pub mod tickets;
pub mod users;
pub mod views;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use ledgerdesk_app::{Outcome, PairOutcome};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::ApiError;

/// Where a command left its stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandResult {
    /// The ticket, user or department (nil for account settings).
    pub id: Uuid,
    /// The stream's version after the command (also the `ETag`).
    pub version: u64,
    /// The global position of the command's last event.
    pub position: u64,
    /// The message, note, file or ticket the command added, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<Uuid>,
}

impl From<Outcome> for CommandResult {
    fn from(o: Outcome) -> Self {
        Self {
            id: o.id,
            version: o.version,
            position: o.position,
            item: o.item,
        }
    }
}

/// A command written to two tickets at once (merge, split).
#[derive(Debug, Serialize, ToSchema)]
pub struct PairResult {
    /// The addressed ticket.
    pub id: Uuid,
    /// Its version after the command.
    pub version: u64,
    /// The global position of the command's last event.
    pub position: u64,
    /// The other ticket: the merge target or the ticket a split created.
    pub target: CommandResult,
}

impl From<PairOutcome> for PairResult {
    fn from(p: PairOutcome) -> Self {
        Self {
            id: p.source.id,
            version: p.source.version,
            position: p.source.position.max(p.target.position),
            target: p.target.into(),
        }
    }
}

/// `ETag` value of a stream version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// 200 with the command result and the new version as `ETag`.
pub fn command_ok(outcome: Outcome) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::ETAG, etag(outcome.version)))
        .json(CommandResult::from(outcome))
}

/// 201 with `Location`, `ETag` and the command result.
pub fn created(outcome: Outcome, location: String) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .insert_header((header::ETAG, etag(outcome.version)))
        .json(CommandResult::from(outcome))
}

/// `?limit=&offset=` of the list endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// At most this many items (1 to 500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Skip this many items (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

impl Page {
    /// Limit and offset, checked.
    pub fn bounds(&self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(100);
        let offset = self.offset.unwrap_or(0);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::bad_field("limit", "limit must be 1 to 500"));
        }
        if offset < 0 {
            return Err(ApiError::bad_field("offset", "offset must be 0 or more"));
        }
        Ok((limit, offset))
    }
}

/// The `{id}` of a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// The id (UUID).
    pub id: Uuid,
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound {
        code: "route_not_found",
        detail: "no such route; see /openapi.json".into(),
    })
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// Mount every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use actix_web::web::{delete, get, patch, post, put};
    cfg.service(resource("/healthz").route(get().to(health::healthz)))
        .service(resource("/readyz").route(get().to(health::readyz)))
        .service(resource("/metrics").route(get().to(health::metrics)))
        .service(resource("/openapi.json").route(get().to(health::openapi)))
        .service(resource("/api/v1/auth/login").route(post().to(auth::login)))
        .service(resource("/api/v1/auth/logout").route(post().to(auth::logout)))
        .service(resource("/api/v1/me").route(get().to(auth::me)))
        .service(
            resource("/api/v1/users")
                .route(post().to(users::create))
                .route(get().to(users::list)),
        )
        .service(
            resource("/api/v1/users/{id}")
                .route(get().to(users::get))
                .route(patch().to(users::update)),
        )
        .service(resource("/api/v1/users/{id}/state").route(put().to(users::change_state)))
        .service(
            resource("/api/v1/departments")
                .route(post().to(departments::create))
                .route(get().to(departments::list)),
        )
        .service(resource("/api/v1/departments/{id}").route(patch().to(departments::update)))
        .service(
            resource("/api/v1/tickets")
                .route(post().to(tickets::create))
                .route(get().to(views::list_tickets)),
        )
        .service(resource("/api/v1/reports/agents").route(get().to(views::agent_report)))
        .service(resource("/api/v1/reports/departments").route(get().to(views::department_report)))
        .service(resource("/api/v1/admin/projections").route(get().to(views::projections)))
        .service(
            resource("/api/v1/admin/projections/{name}/rebuild").route(post().to(views::rebuild)),
        )
        .service(resource("/api/v1/audit").route(get().to(audit::search)))
        .service(resource("/api/v1/audit/actions").route(get().to(audit::actions)))
        .service(resource("/api/v1/audit/stream").route(get().to(audit::stream)))
        .service(resource("/api/v1/admin/erasure").route(post().to(privacy::erase)))
        .service(resource("/api/v1/tickets/{id}").route(get().to(tickets::get)))
        .service(resource("/api/v1/tickets/{id}/history").route(get().to(tickets::history)))
        .service(resource("/api/v1/tickets/{id}/messages").route(post().to(tickets::message)))
        .service(resource("/api/v1/tickets/{id}/notes").route(post().to(tickets::note)))
        .service(resource("/api/v1/tickets/{id}/files").route(post().to(files::upload)))
        .service(resource("/api/v1/tickets/{id}/status").route(post().to(tickets::status)))
        .service(resource("/api/v1/tickets/{id}/priority").route(post().to(tickets::priority)))
        .service(resource("/api/v1/tickets/{id}/transfer").route(post().to(tickets::transfer)))
        .service(resource("/api/v1/tickets/{id}/tags").route(post().to(tickets::tags)))
        .service(resource("/api/v1/tickets/{id}/ranking").route(post().to(tickets::ranking)))
        .service(resource("/api/v1/tickets/{id}/split").route(post().to(tickets::split)))
        .service(resource("/api/v1/tickets/{id}/merge").route(post().to(tickets::merge)))
        .service(resource("/api/v1/tickets/{id}/forward").route(post().to(tickets::forward)))
        .service(resource("/api/v1/tickets/{id}/calls").route(post().to(tickets::call)))
        .service(
            resource("/api/v1/tickets/{id}/voice-messages")
                .route(post().to(tickets::voice_message)),
        )
        .service(resource("/api/v1/tickets/{id}/chat").route(post().to(tickets::chat)))
        .service(
            resource("/api/v1/tickets/{id}/views")
                .route(post().to(tickets::view))
                .route(delete().to(tickets::leave)),
        )
        .service(
            resource("/api/v1/tickets/{id}/system-messages")
                .route(post().to(tickets::system_message)),
        )
        .service(resource("/api/v1/files/{sha256}").route(get().to(files::download)))
        .service(resource("/api/v1/activity").route(post().to(settings::activity)))
        .service(resource("/api/v1/settings").route(get().to(settings::get)))
        .service(resource("/api/v1/settings/{key}").route(put().to(settings::change)))
        .service(resource("/api/v1/events").route(get().to(ledger::events)))
        .service(resource("/api/v1/events/{position}/proof").route(get().to(ledger::proof)))
        .service(resource("/api/v1/audit/consistency").route(get().to(ledger::consistency)))
        .service(resource("/api/v1/audit/checkpoints").route(get().to(ledger::checkpoints)))
        .service(resource("/api/v1/audit/public-key").route(get().to(ledger::public_key)))
        .service(resource("/api/v1/admin/verify").route(get().to(ledger::verify)))
        .default_service(web::to(not_found));
}
