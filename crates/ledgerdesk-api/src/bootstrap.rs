//! First start of an empty database: the system account (which records
//! login failures for unknown emails; it has no password and cannot log in)
//! and the first admin, with `bootstrap.admin_password` or a generated
//! password logged once at warn level.

use ledgerdesk_app::{input, Actor, AppError};
use uuid::Uuid;

use crate::auth::generated_password;
use crate::configuration::BootstrapSettings;
use crate::state::AppState;

/// The system account's email (not deliverable on purpose).
pub const SYSTEM_EMAIL: &str = "system@ledgerdesk.invalid";

/// Why the first users could not be created. Startup wraps it; it is its
/// own type so that this module does not depend on the one that calls it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BootstrapError(String);

fn failed(what: &str, e: impl std::fmt::Display) -> BootstrapError {
    BootstrapError(format!("{what}: {e}"))
}

async fn create(
    state: &AppState,
    name: &str,
    email: &str,
    role: &str,
    system: bool,
) -> Result<Option<Uuid>, BootstrapError> {
    let id = Uuid::now_v7();
    let new = input::NewUser {
        user_id: Some(id),
        name: name.to_string(),
        email: email.to_string(),
        role: role.to_string(),
        department_id: None,
    };
    match state
        .helpdesk
        .create_account(&Actor::system(), new, system)
        .await
    {
        Ok(_) => Ok(Some(id)),
        // Another process bootstrapped meanwhile.
        Err(AppError::EmailTaken) => Ok(None),
        Err(e) => Err(failed(&format!("cannot create {email}"), e)),
    }
}

/// Create the system account and the first admin when there are no users.
pub async fn run(state: &AppState, settings: &BootstrapSettings) -> Result<(), BootstrapError> {
    let users = state
        .helpdesk
        .account_count()
        .await
        .map_err(|e| failed("cannot count users", e))?;
    if users > 0 {
        return Ok(());
    }
    create(state, "ledgerdesk system", SYSTEM_EMAIL, "auditor", true).await?;
    let (password, generated) = match &settings.admin_password {
        Some(p) => (p.expose().to_string(), false),
        None => (generated_password(), true),
    };
    let Some(admin) = create(
        state,
        "Administrator",
        &settings.admin_email,
        "admin",
        false,
    )
    .await?
    else {
        return Ok(());
    };
    let passwords = state.passwords.clone();
    let secret = password.clone();
    let hash = tokio::task::spawn_blocking(move || passwords.hash(&secret))
        .await
        .map_err(|e| failed("cannot hash the password", e))?
        .map_err(|e| failed("cannot hash the password", e))?;
    state
        .db
        .set_password(admin, &hash)
        .await
        .map_err(|e| failed("cannot store the password", e))?;
    if generated {
        tracing::warn!(
            email = %settings.admin_email,
            password = %password,
            "created the first admin with a generated password; it is shown only this once: log in and change it"
        );
    } else {
        tracing::info!(email = %settings.admin_email, "created the first admin");
    }
    Ok(())
}
