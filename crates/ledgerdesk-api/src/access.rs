//! The words of the permission table ([`crate::permissions`]): who may
//! call a route and how they prove it. Apart from the table, so the routes
//! that declare their own rows (the ticket actions) and the table that
//! collects them both sit above it.

use crate::auth::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token.
    Public,
    /// A valid token of one of these roles.
    Roles(&'static [Role]),
}

/// How a route's caller proves who they are. The API takes bearer tokens
/// only, so a browser's cookies never authorise an API call (no CSRF
/// there); the console takes the session cookie only, and the gate then
/// also holds its forms to a CSRF token and a same-origin `Origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`; refusals are problem+json.
    Bearer,
    /// The `ledgerdesk_session` cookie; refusals are pages (a sign-in
    /// redirect or a 403 page).
    Cookie,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Permission {
    /// HTTP method.
    pub method: &'static str,
    /// The route pattern, as registered.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// How the caller authenticates.
    pub auth: Auth,
}

pub(crate) const ALL: Access = Access::Roles(&[Role::Agent, Role::Admin, Role::Auditor]);
pub(crate) const STAFF: Access = Access::Roles(&[Role::Agent, Role::Admin]);
pub(crate) const ADMIN: Access = Access::Roles(&[Role::Admin]);
pub(crate) const READERS: Access = Access::Roles(&[Role::Admin, Role::Auditor]);
pub(crate) const PUBLIC: Access = Access::Public;

impl Access {
    /// Whether `role` may call.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public => true,
            Access::Roles(roles) => roles.contains(&role),
        }
    }

    /// `agent, admin` or `public`, for documents.
    pub fn describe(self) -> String {
        match self {
            Access::Public => "public (no token)".to_string(),
            Access::Roles(roles) => roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}
