//! Logging in and out. A login answers the same way, in the same time, for
//! an unknown email as for a wrong password (a dummy Argon2 hash is
//! verified); failures and refusals are events: `user.login_failed` on the
//! account's stream, or a `login_failed` general action on the system
//! account's stream when the email is unknown.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use ledgerdesk_app::{input, Actor, AppError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{new_token, normalise_email, token_hash};
use crate::db::UserRow;
use crate::error::ApiError;
use crate::extract::{actor_of, Cx, Json};
use crate::routes::users::{user_view, UserView};
use crate::routes::{command_ok, CommandResult};
use crate::state::AppState;

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Login email (case does not matter).
    pub email: String,
    /// Password.
    pub password: String,
}

/// A new session.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// Who logged in.
    pub user: UserRow,
}

const WRONG_CREDENTIALS: &str = "wrong email or password";

/// Record a refused or failed login: on the account's stream when the email
/// belongs to one, else as a general action of the system account.
async fn record_failure(
    state: &AppState,
    actor: &Actor,
    user_id: Option<Uuid>,
    reason: &str,
) -> Result<(), ApiError> {
    match user_id {
        Some(id) => {
            let failure = input::LoginFailure {
                reason: reason.to_string(),
            };
            state.helpdesk.fail_login(actor, id, failure).await?;
        }
        None => {
            let Some(system) = state.db.system_user().await? else {
                tracing::warn!("no system account to record a login failure on");
                return Ok(());
            };
            let action = input::Action {
                action: "login_failed".into(),
                description: format!("login refused for an unknown account: {reason}"),
            };
            state
                .helpdesk
                .record_general_action(actor, system, action)
                .await?;
        }
    }
    Ok(())
}

/// Log in with email and password.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in: a bearer token", body = LoginResponse),
        (status = 401, description = "Wrong email or password", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins for this account or address; see Retry-After", body = crate::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    Json(body): Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let email = normalise_email(&body.email);
    let ip = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let actor = actor_of(&req, None);
    if let Some(retry_after) = state.limiter.retry_after(&email, &ip) {
        let user_id = state.db.user_by_email(&email).await?;
        record_failure(&state, &actor, user_id, "too_many_attempts").await?;
        return Err(ApiError::TooManyRequests { retry_after });
    }
    let found = state.db.login(&email).await?;
    let passwords = state.passwords.clone();
    let hash = found.as_ref().map(|f| f.password_hash.clone());
    let password = body.password;
    let matches = web::block(move || passwords.verify(&password, hash.as_deref()))
        .await
        .map_err(ApiError::internal)?;
    let failure = match &found {
        None => "unknown_account",
        Some(_) if !matches => "wrong_password",
        Some(user) if !user.active => "user_deactivated",
        Some(user) => {
            let logged_in = state
                .helpdesk
                .log_in(&actor_of(&req, Some(user.user_id)), user.user_id)
                .await;
            match logged_in {
                Ok(_) => "",
                Err(AppError::Rejected(_)) => "user_deactivated",
                Err(e) => return Err(e.into()),
            }
        }
    };
    let user_id = found.as_ref().map(|f| f.user_id);
    if !failure.is_empty() {
        state.limiter.fail(&email, &ip);
        record_failure(&state, &actor, user_id, failure).await?;
        return Err(ApiError::Unauthorized {
            detail: WRONG_CREDENTIALS,
        });
    }
    let user_id = user_id.unwrap_or_default();
    state.limiter.succeed(&email);
    let token = new_token();
    let expires_at = Utc::now() + chrono::Duration::seconds(state.token_ttl_secs as i64);
    state
        .db
        .create_session(&token_hash(&token), user_id, expires_at.timestamp())
        .await?;
    let user = state
        .db
        .user(user_id)
        .await?
        .ok_or_else(|| ApiError::internal("a user with credentials has no row"))?;
    Ok(HttpResponse::Ok().json(LoginResponse {
        token,
        token_type: "Bearer".into(),
        expires_at,
        user,
    }))
}

/// Log out: revoke the token and record `user.logged_out`.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    responses((status = 200, description = "Logged out; the token no longer works", body = CommandResult))
)]
pub async fn logout(state: web::Data<AppState>, cx: Cx) -> Result<HttpResponse, ApiError> {
    let outcome = state.helpdesk.log_out(&cx.actor, cx.caller.user_id).await?;
    state.db.revoke_session(&cx.caller.token_hash).await?;
    state.sessions.forget(&cx.caller.token_hash);
    Ok(command_ok(outcome))
}

/// The caller's own account.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "auth",
    responses((status = 200, description = "The caller", body = UserView))
)]
pub async fn me(state: web::Data<AppState>, cx: Cx) -> Result<HttpResponse, ApiError> {
    user_view(&state, cx.caller.user_id).await
}
