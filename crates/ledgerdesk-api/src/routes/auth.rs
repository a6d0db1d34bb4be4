//! Logging in and out. A login answers the same way, in the same time, for
//! an unknown email as for a wrong password (a dummy Argon2 hash is
//! verified). Each attempt takes a slot of the [`LoginLimiter`] before its
//! password is checked, and the check waits its turn at the [`Verifier`].
//!
//! What the log keeps (see docs/audit.md): every failed check, as
//! `user.login_failed` on the account's stream, or a `login_failed`
//! general action on the system account's stream when the email is
//! unknown; the failed checks are bounded by the limiter. Refused attempts
//! are not recorded one by one: a throttle of an account or an address is
//! recorded when it starts and then at most once per window, with the
//! number of attempts it refused.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use ledgerdesk_app::{input, Actor, AppError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use ledgerdesk_domain::fields::limits::EMAIL_MAX;

use crate::auth::{new_token, normalise_email, token_hash, LimitKey, ThrottleReport};
use crate::error::ApiError;
use crate::extract::{actor_of, Cx, Json};
use crate::routes::users::UserRow;
use crate::routes::users::{own_view, UserView};
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
            let Some(system) = state.helpdesk.system_account().await? else {
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

/// Record refused attempts of one throttled account or address; the
/// count is what it refused since its previous report.
async fn record_throttle(
    state: &AppState,
    actor: &Actor,
    report: ThrottleReport,
) -> Result<(), ApiError> {
    let reason = format!("too_many_attempts ({} refused)", report.refused);
    match report.key {
        LimitKey::Account(email) => {
            let user_id = state.helpdesk.account_by_email(&email).await?;
            record_failure(state, actor, user_id, &reason).await
        }
        LimitKey::Address(ip) => {
            let Some(system) = state.helpdesk.system_account().await? else {
                tracing::warn!("no system account to record a login throttle on");
                return Ok(());
            };
            let action = input::Action {
                action: "login_failed".into(),
                description: format!("logins refused from this address: {reason}"),
            };
            let actor = actor.clone().with_ip(ip);
            state
                .helpdesk
                .record_general_action(&actor, system, action)
                .await?;
            Ok(())
        }
    }
}

/// Records what throttles refused since their last report, once a window:
/// a caller who keeps trying, or stopped, is accounted for in full.
pub async fn report_throttles(state: AppState) {
    let mut every = tokio::time::interval(state.limiter.window());
    loop {
        every.tick().await;
        for report in state.limiter.due_reports() {
            if let Err(e) = record_throttle(&state, &Actor::system(), report).await {
                tracing::warn!(error = %e, "recording a login throttle failed");
            }
        }
    }
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
        (status = 503, description = "Too many logins being checked at once; see Retry-After", body = crate::error::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    Json(body): Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let session = sign_in(&req, &state, &body.email, body.password).await?;
    // The token must not stay in a cache on the way.
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(LoginResponse {
            token: session.token,
            token_type: "Bearer".into(),
            expires_at: session.expires_at,
            user: session.user,
        }))
}

/// A session just opened by [`sign_in`].
#[derive(Debug)]
pub struct NewSession {
    /// The secret: a bearer token, or the console's cookie value.
    pub token: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// Who signed in.
    pub user: UserRow,
}

/// Check an email and password and open a session: the one login of the
/// API and the console, throttle, failure records and all. Errors are the
/// login's answers (401 wrong credentials, 429 throttled, 503 busy).
pub async fn sign_in(
    req: &HttpRequest,
    state: &AppState,
    email: &str,
    password: String,
) -> Result<NewSession, ApiError> {
    let email = normalise_email(email);
    // No account has a longer one, and the limiter keys on it.
    if email.chars().count() > EMAIL_MAX {
        return Err(ApiError::bad_field(
            "email",
            format!("email is longer than {EMAIL_MAX} characters"),
        ));
    }
    let ip = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let actor = actor_of(req, None);
    let attempt = match state.limiter.begin(&email, &ip) {
        Ok(attempt) => attempt,
        Err(refused) => {
            for report in refused.reports {
                // The caller is refused either way; a log that cannot be
                // written now is the server's trouble, not a reason to
                // answer 503 instead of 429.
                if let Err(e) = record_throttle(state, &actor, report).await {
                    tracing::warn!(error = %e, "recording a login throttle failed");
                }
            }
            return Err(ApiError::TooManyRequests {
                retry_after: refused.retry_after,
            });
        }
    };
    // A server fault is no failed attempt: the slot is given back.
    let found = match state.db.login(&email).await {
        Ok(found) => found,
        Err(e) => {
            attempt.unchecked();
            return Err(e.into());
        }
    };
    let hash = found.as_ref().map(|f| f.password_hash.clone());
    let Ok(matches) = state.verifier.verify(password, hash).await else {
        attempt.unchecked();
        return Err(ApiError::Busy {
            code: "verifier_busy",
            detail: "too many logins at once; try again shortly",
            retry_after: state.verifier.wait().as_secs().max(1),
        });
    };
    let failure = match &found {
        None => "unknown_account",
        Some(_) if !matches => "wrong_password",
        Some(user) if !user.active => "user_deactivated",
        Some(user) => {
            let logged_in = state
                .helpdesk
                .log_in(&actor_of(req, Some(user.user_id)), user.user_id)
                .await;
            match logged_in {
                Ok(_) => "",
                Err(AppError::Rejected(_)) => "user_deactivated",
                Err(e) => {
                    attempt.unchecked();
                    return Err(e.into());
                }
            }
        }
    };
    let user_id = found.as_ref().map(|f| f.user_id);
    if !failure.is_empty() {
        attempt.failed();
        record_failure(state, &actor, user_id, failure).await?;
        return Err(ApiError::Unauthorized {
            detail: WRONG_CREDENTIALS,
        });
    }
    attempt.succeeded();
    let user_id = user_id.unwrap_or_default();
    let token = new_token();
    let expires_at = Utc::now() + chrono::Duration::seconds(state.token_ttl_secs as i64);
    state
        .db
        .create_session(&token_hash(&token), user_id, expires_at.timestamp())
        .await?;
    // From the stream: the projection may not have the login yet.
    let (account, _) = state
        .helpdesk
        .user(user_id)
        .await?
        .ok_or_else(|| ApiError::internal("a user with credentials has no stream"))?;
    let user = UserRow {
        id: user_id,
        email: normalise_email(&account.email),
        name: account.name,
        role: account.role.as_str().to_string(),
        department_id: account.department,
        active: !account.deactivated,
    };
    Ok(NewSession {
        token,
        expires_at,
        user,
    })
}

/// End the caller's session: record `user.logged_out`, then revoke it.
pub async fn sign_out(state: &AppState, cx: &Cx) -> Result<ledgerdesk_app::Outcome, ApiError> {
    let outcome = state.helpdesk.log_out(&cx.actor, cx.caller.user_id).await?;
    state.db.revoke_session(&cx.caller.token_hash).await?;
    state.sessions.forget(&cx.caller.token_hash);
    Ok(outcome)
}

/// Log out: revoke the token and record `user.logged_out`.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    responses((status = 200, description = "Logged out; the token no longer works", body = CommandResult))
)]
pub async fn logout(state: web::Data<AppState>, cx: Cx) -> Result<HttpResponse, ApiError> {
    Ok(command_ok(sign_out(&state, &cx).await?))
}

/// The caller's own account.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "auth",
    responses((status = 200, description = "The caller", body = UserView))
)]
pub async fn me(state: web::Data<AppState>, cx: Cx) -> Result<HttpResponse, ApiError> {
    let mut res = own_view(&state, cx.caller.user_id).await?;
    // The session's own account: not for a shared cache.
    let headers = res.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    headers.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
    Ok(res)
}
