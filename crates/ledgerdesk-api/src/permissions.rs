//! THE permission table: every route, and who may call it. Each route is
//! mounted with its row (`crate::routes::configure`), and the gate wrapped
//! around that route enforces it; mounting a route without a row panics at
//! start-up, so forgetting an entry fails closed. The OpenAPI document
//! takes its security requirements and role notes from here; `docs/api.md`
//! copies it; `tests/gate.rs` walks every route in every spelling.

pub use crate::access::{Access, Auth, Permission};
use crate::access::{ADMIN, ALL, PUBLIC, READERS, STAFF};
use crate::routes::tickets;

const fn p(method: &'static str, path: &'static str, access: Access) -> Permission {
    Permission {
        method,
        path,
        access,
        auth: Auth::Bearer,
    }
}

/// A console route: a page for a browser, signed in by cookie.
const fn c(method: &'static str, path: &'static str, access: Access) -> Permission {
    Permission {
        method,
        path,
        access,
        auth: Auth::Cookie,
    }
}

/// Route → allowed roles: the rows below, then one per plain ticket action,
/// declared with its route in [`tickets::ACTIONS`].
pub const PERMISSIONS: &[Permission] =
    &with_ticket_actions::<{ ROUTES.len() + tickets::ACTIONS.len() }>();

const fn with_ticket_actions<const N: usize>() -> [Permission; N] {
    let mut all = [ROUTES[0]; N];
    let mut i = 0;
    while i < ROUTES.len() {
        all[i] = ROUTES[i];
        i += 1;
    }
    while i < N {
        all[i] = tickets::ACTIONS[i - ROUTES.len()].permission();
        i += 1;
    }
    all
}

const ROUTES: &[Permission] = &[
    p("GET", "/healthz", PUBLIC),
    p("GET", "/readyz", PUBLIC),
    p("GET", "/metrics", PUBLIC),
    p("GET", "/openapi.json", PUBLIC),
    p("POST", "/api/v1/auth/login", PUBLIC),
    p("POST", "/api/v1/auth/logout", ALL),
    p("GET", "/api/v1/me", ALL),
    p("POST", "/api/v1/users", ADMIN),
    p("GET", "/api/v1/users", ALL),
    p("GET", "/api/v1/users/{id}", ALL),
    p("PATCH", "/api/v1/users/{id}", ADMIN),
    p("PUT", "/api/v1/users/{id}/state", STAFF),
    p("POST", "/api/v1/departments", ADMIN),
    p("GET", "/api/v1/departments", ALL),
    p("PATCH", "/api/v1/departments/{id}", ADMIN),
    p("POST", "/api/v1/tickets", STAFF),
    p("GET", "/api/v1/tickets", ALL),
    p("GET", "/api/v1/reports/agents", READERS),
    p("GET", "/api/v1/reports/departments", READERS),
    p("GET", "/api/v1/reports/time", READERS),
    p("GET", "/api/v1/admin/projections", READERS),
    p("POST", "/api/v1/admin/projections/{name}/rebuild", ADMIN),
    p("GET", "/api/v1/audit", READERS),
    p("GET", "/api/v1/audit/actions", READERS),
    p("GET", "/api/v1/audit/stream", READERS),
    p("POST", "/api/v1/admin/erasure", ADMIN),
    p("GET", "/api/v1/tickets/{id}", ALL),
    p("GET", "/api/v1/tickets/{id}/history", ALL),
    p("GET", "/api/v1/tickets/{id}/messages", ALL),
    p("POST", "/api/v1/tickets/{id}/files", STAFF),
    p("POST", "/api/v1/tickets/{id}/transfer", STAFF),
    p("POST", "/api/v1/tickets/{id}/split", STAFF),
    p("POST", "/api/v1/tickets/{id}/merge", STAFF),
    p("POST", "/api/v1/tickets/{id}/views", STAFF),
    p("DELETE", "/api/v1/tickets/{id}/views", STAFF),
    p("GET", "/api/v1/files/{sha256}", ALL),
    p("POST", "/api/v1/activity", STAFF),
    p("GET", "/api/v1/settings", READERS),
    p("PUT", "/api/v1/settings/{key}", ADMIN),
    p("GET", "/api/v1/events", READERS),
    p("GET", "/api/v1/events/{position}/proof", READERS),
    p("GET", "/api/v1/audit/consistency", READERS),
    p("GET", "/api/v1/audit/checkpoints", READERS),
    p("GET", "/api/v1/audit/public-key", READERS),
    p("GET", "/api/v1/admin/verify", READERS),
    // The console (docs/console.md).
    c("GET", "/", PUBLIC),
    c("GET", "/console/", ALL),
    c("GET", "/console/assets/{name}", PUBLIC),
    c("GET", "/console/login", PUBLIC),
    c("POST", "/console/login", PUBLIC),
    c("POST", "/console/logout", ALL),
    c("GET", "/console/audit", READERS),
    c("GET", "/console/audit/export", READERS),
    c("GET", "/console/audit/stream", READERS),
    c("GET", "/console/tickets", ALL),
    c("GET", "/console/tickets/{id}", ALL),
    c("GET", "/console/tickets/{id}/history", ALL),
    c("GET", "/console/files/{sha256}", ALL),
    c("POST", "/console/tickets/{id}/reply", STAFF),
    c("POST", "/console/tickets/{id}/note", STAFF),
    c("POST", "/console/tickets/{id}/status", STAFF),
    c("POST", "/console/tickets/{id}/assign", STAFF),
    c("GET", "/console/integrity", READERS),
    c("GET", "/console/integrity/bundle", READERS),
    c("GET", "/console/operations", ADMIN),
    c("POST", "/console/operations/{name}/rebuild", ADMIN),
];

/// The row for a method and route pattern.
pub fn lookup(method: &str, path: &str) -> Option<&'static Permission> {
    PERMISSIONS
        .iter()
        .find(|p| p.method == method && p.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use std::collections::HashSet;

    #[test]
    fn each_route_appears_once() {
        let mut seen = HashSet::new();
        for p in PERMISSIONS {
            assert!(seen.insert((p.method, p.path)), "{} {}", p.method, p.path);
        }
    }

    #[test]
    fn auditors_change_nothing() {
        for p in PERMISSIONS {
            let logout = ["/api/v1/auth/logout", "/console/logout"].contains(&p.path);
            if p.method != "GET" && p.access != PUBLIC && !logout {
                assert!(!p.access.allows(Role::Auditor), "{} {}", p.method, p.path);
            }
        }
    }
}
