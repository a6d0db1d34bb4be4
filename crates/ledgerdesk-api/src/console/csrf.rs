//! The CSRF token of a console session, which every form carries and the
//! cookie gate ([`super::session::gate`]) checks.

use sha2::{Digest, Sha256};

/// The hidden form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// The CSRF token of the session a request came with, put in the
/// request's extensions by the gate for the page's forms.
#[derive(Debug, Clone)]
pub struct Csrf(pub String);

/// The CSRF token bound to a session: derived from the session's secret
/// token, which only the cookie holds (the database keeps its hash), so a
/// page of another site can neither read nor compute it.
pub fn csrf_token(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"ledgerdesk console csrf\0");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

pub(crate) fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
