//! One module per resource; [`configure`] mounts them all. Every route here
//! has a row in [`crate::permissions::PERMISSIONS`] and an OpenAPI entry
//! in [`crate::openapi`]; a test checks the three agree. The plain ticket
//! actions are mounted from their table, [`tickets::ACTIONS`], which also
//! gives their permission rows and OpenAPI entries.

pub mod audit;
pub mod auth;
pub mod conversation;
pub mod departments;
pub mod files;
pub mod health;
pub mod ledger;
pub mod names;
pub mod privacy;
pub mod settings;
pub mod tickets;
pub mod users;
pub mod views;

use actix_web::http::{header, Method};
use actix_web::middleware::from_fn;
use actix_web::{web, FromRequest, Handler, HttpResponse, Responder};
use ledgerdesk_app::{Outcome, PairOutcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
pub use crate::extract::IdPath;
use crate::middleware::BodyLimit;
use crate::{middleware, permissions};

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

/// The largest log position a query may name: positions are stored as
/// signed 64-bit integers, and the OpenAPI document says `int64`.
pub const MAX_POSITION: u64 = i64::MAX as u64;

/// A log position given as text, or a 400 naming `name`.
pub fn parse_position(name: &str, value: &str) -> Result<u64, ApiError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= MAX_POSITION)
        .ok_or_else(|| {
            ApiError::bad_field(
                name,
                format!("{name} must be a log position, a whole number from 0 to {MAX_POSITION}"),
            )
        })
}

/// `#[serde(deserialize_with)]` for an optional log position in a query.
pub fn position<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(n) if n > MAX_POSITION => Err(serde::de::Error::custom(format!(
            "must be a log position, a whole number from 0 to {MAX_POSITION}"
        ))),
        other => Ok(other),
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

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound {
        code: "route_not_found",
        detail: "no such route; see /openapi.json".into(),
    })
}

/// A resource whose every route carries its own row of the permission
/// table. Authorization runs on the route that actually answers, after
/// routing has decoded the path, so no spelling of a path can reach a
/// handler without its check; a route with no row panics when mounted, so
/// an unlisted route cannot be served. Other methods get 405 with `Allow`.
struct Secured {
    path: &'static str,
    resource: actix_web::Resource,
    methods: Vec<&'static str>,
}

fn at(path: &'static str) -> Secured {
    Secured {
        path,
        resource: web::resource(path),
        methods: Vec::new(),
    }
}

impl Secured {
    fn on<F, Args>(self, method: &'static str, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(method, BodyLimit::Json, handler)
    }

    fn upload<F, Args>(self, method: &'static str, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(method, BodyLimit::File, handler)
    }

    fn route<F, Args>(mut self, method: &'static str, limit: BodyLimit, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let Some(row) = permissions::lookup(method, self.path) else {
            panic!("{method} {} has no row in the permission table", self.path);
        };
        let verb = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        // The last wrap runs first: the gate, then idempotency, then the
        // handler and its extractors.
        let route = web::method(verb)
            .to(handler)
            .wrap(from_fn(move |req, next| {
                middleware::idempotency(limit, req, next)
            }))
            .wrap(from_fn(move |req, next| middleware::gate(row, req, next)));
        self.methods.push(method);
        self.resource = self.resource.route(route);
        self
    }

    fn done(self) -> actix_web::Resource {
        let allow = self.methods.join(", ");
        self.resource.default_service(web::to(move || {
            let allow = allow.clone();
            async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow }) }
        }))
    }
}

/// Mount every route, each with its row of [`permissions::PERMISSIONS`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(at("/healthz").on("GET", health::healthz).done())
        .service(at("/readyz").on("GET", health::readyz).done())
        .service(at("/metrics").on("GET", health::metrics).done())
        .service(at("/openapi.json").on("GET", crate::openapi::serve).done())
        .service(at("/api/v1/auth/login").on("POST", auth::login).done())
        .service(at("/api/v1/auth/logout").on("POST", auth::logout).done())
        .service(at("/api/v1/me").on("GET", auth::me).done())
        .service(
            at("/api/v1/users")
                .on("POST", users::create)
                .on("GET", users::list)
                .done(),
        )
        .service(
            at("/api/v1/users/{id}")
                .on("GET", users::get)
                .on("PATCH", users::update)
                .done(),
        )
        .service(
            at("/api/v1/users/{id}/state")
                .on("PUT", users::change_state)
                .done(),
        )
        .service(
            at("/api/v1/departments")
                .on("POST", departments::create)
                .on("GET", departments::list)
                .done(),
        )
        .service(
            at("/api/v1/departments/{id}")
                .on("PATCH", departments::update)
                .done(),
        )
        .service(
            at("/api/v1/tickets")
                .on("POST", tickets::create)
                .on("GET", views::list_tickets)
                .done(),
        )
        .service(
            at("/api/v1/reports/agents")
                .on("GET", views::agent_report)
                .done(),
        )
        .service(
            at("/api/v1/reports/departments")
                .on("GET", views::department_report)
                .done(),
        )
        .service(
            at("/api/v1/reports/time")
                .on("GET", views::time_report)
                .done(),
        )
        .service(
            at("/api/v1/admin/projections")
                .on("GET", views::projections)
                .done(),
        )
        .service(
            at("/api/v1/admin/projections/{name}/rebuild")
                .on("POST", views::rebuild)
                .done(),
        )
        .service(at("/api/v1/audit").on("GET", audit::search).done())
        .service(at("/api/v1/audit/actions").on("GET", audit::actions).done())
        .service(at("/api/v1/audit/stream").on("GET", audit::stream).done())
        .service(
            at("/api/v1/admin/erasure")
                .on("POST", privacy::erase)
                .done(),
        )
        .service(
            at("/api/v1/tickets/{id}")
                .on("GET", conversation::get)
                .done(),
        )
        .service(
            at("/api/v1/tickets/{id}/history")
                .on("GET", tickets::history)
                .done(),
        )
        .service(
            tickets::ACTIONS
                .iter()
                .find(|action| action.path == tickets::MESSAGES)
                .expect("the message action")
                .mount(at(tickets::MESSAGES).on("GET", conversation::messages))
                .done(),
        )
        .service(
            at("/api/v1/tickets/{id}/files")
                .upload("POST", files::upload)
                .done(),
        )
        .service(
            at("/api/v1/tickets/{id}/transfer")
                .on("POST", tickets::transfer)
                .done(),
        )
        .service(
            at("/api/v1/tickets/{id}/split")
                .on("POST", tickets::split)
                .done(),
        )
        .service(
            at("/api/v1/tickets/{id}/merge")
                .on("POST", tickets::merge)
                .done(),
        )
        .service(
            at("/api/v1/tickets/{id}/views")
                .on("POST", tickets::view)
                .on("DELETE", tickets::leave)
                .done(),
        )
        .service(
            at("/api/v1/files/{sha256}")
                .on("GET", files::download)
                .done(),
        )
        .service(at("/api/v1/activity").on("POST", settings::activity).done())
        .service(at("/api/v1/settings").on("GET", settings::get).done())
        .service(
            at("/api/v1/settings/{key}")
                .on("PUT", settings::change)
                .done(),
        )
        .service(at("/api/v1/events").on("GET", ledger::events).done())
        .service(
            at("/api/v1/events/{position}/proof")
                .on("GET", ledger::proof)
                .done(),
        )
        .service(
            at("/api/v1/audit/consistency")
                .on("GET", ledger::consistency)
                .done(),
        )
        .service(
            at("/api/v1/audit/checkpoints")
                .on("GET", ledger::checkpoints)
                .done(),
        )
        .service(
            at("/api/v1/audit/public-key")
                .on("GET", ledger::public_key)
                .done(),
        )
        .service(at("/api/v1/admin/verify").on("GET", ledger::verify).done());
    for action in tickets::ACTIONS
        .iter()
        .filter(|action| action.path != tickets::MESSAGES)
    {
        cfg.service(action.mount(at(action.path)).done());
    }
    console_routes(cfg);
    cfg.default_service(web::to(not_found));
}

/// The console's pages, each with its own (cookie) row. The export, the
/// live stream and file downloads are the API's own handlers.
fn console_routes(cfg: &mut web::ServiceConfig) {
    use crate::console::{self, audit as c_audit, session, tickets as c_tickets};
    cfg.service(at("/").on("GET", session::root).done())
        .service(at("/console/").on("GET", session::start).done())
        .service(
            at("/console/assets/{name}")
                .on("GET", console::asset)
                .done(),
        )
        .service(
            at("/console/login")
                .on("GET", session::login_form)
                .on("POST", session::login)
                .done(),
        )
        .service(at("/console/logout").on("POST", session::logout).done())
        .service(at("/console/audit").on("GET", c_audit::page).done())
        .service(at("/console/audit/export").on("GET", audit::search).done())
        .service(at("/console/audit/stream").on("GET", audit::stream).done())
        .service(at("/console/tickets").on("GET", c_tickets::list).done())
        .service(
            at("/console/tickets/{id}")
                .on("GET", c_tickets::show)
                .done(),
        )
        .service(
            at("/console/tickets/{id}/history")
                .on("GET", c_tickets::history)
                .done(),
        )
        .service(
            at("/console/tickets/{id}/reply")
                .on("POST", c_tickets::reply)
                .done(),
        )
        .service(
            at("/console/tickets/{id}/note")
                .on("POST", c_tickets::note)
                .done(),
        )
        .service(
            at("/console/tickets/{id}/status")
                .on("POST", c_tickets::status)
                .done(),
        )
        .service(
            at("/console/tickets/{id}/assign")
                .on("POST", c_tickets::assign)
                .done(),
        )
        .service(
            at("/console/files/{sha256}")
                .on("GET", files::download)
                .done(),
        )
        .service(
            at("/console/integrity")
                .on("GET", console::integrity::page)
                .done(),
        )
        .service(
            at("/console/integrity/bundle")
                .on("GET", console::integrity::bundle)
                .done(),
        )
        .service(
            at("/console/operations")
                .on("GET", console::operations::page)
                .done(),
        )
        .service(
            at("/console/operations/{name}/rebuild")
                .on("POST", console::operations::rebuild)
                .done(),
        );
}
