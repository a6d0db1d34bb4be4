//! One module per resource; `configure` mounts them all.

pub mod health;

use actix_web::web;

/// Mount every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz));
}
