//! Who is calling: a session token's hash becomes the [`Caller`] with a
//! role, or a refusal. Shared by the API's bearer gate
//! ([`crate::middleware::gate`]) and the console's cookie gate
//! ([`crate::console::session::gate`]), so both obey the same revocation,
//! expiry and deactivation rules.

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::AppState;

/// The caller behind a token hash when its session is live (not revoked,
/// not expired, the account active) and its role is one of `roles`: 401 or
/// 403 otherwise. The gate asks it once per request; a response that lasts
/// (the audit stream) asks again while it runs.
pub(crate) async fn authorize(
    state: &AppState,
    hash: String,
    method: &str,
    pattern: &str,
    roles: &[Role],
) -> Result<Caller, ApiError> {
    let unauthorized = |detail| ApiError::Unauthorized { detail };
    let session = match state.sessions.get(&hash) {
        Some(cached) => Some(cached),
        None => {
            let found = state.db.session(&hash).await?;
            if let Some(row) = &found {
                state.sessions.put(&hash, row.clone());
            }
            found
        }
    };
    let Some(session) = session.filter(|s| s.active) else {
        return Err(unauthorized("the token is unknown, expired or revoked"));
    };
    let Some(role) = Role::parse(&session.role) else {
        return Err(unauthorized("the account has no usable role"));
    };
    if !roles.contains(&role) {
        let detail = format!("the {} role may not call {method} {pattern}", role.as_str());
        return Err(ApiError::Forbidden { detail });
    }
    Ok(Caller {
        user_id: session.user_id,
        role,
        token_hash: hash,
    })
}
