//! Accounts: the user commands that also keep the login account beside the
//! user stream (see [`ledgerdesk_store::accounts`]). The stream is the
//! record; the account reserves the email before the first event (so two
//! users never share one) and carries the role and activity sessions are
//! checked against. Credentials and sessions are the API's.

use ledgerdesk_domain::user::check_own_change;
use ledgerdesk_domain::UserError;
use ledgerdesk_store::accounts::{self, Reservation};
use uuid::Uuid;

use crate::actor::Actor;
use crate::error::{AppError, DomainRefusal};
use crate::helpdesk::{Helpdesk, Outcome};
use crate::input;
use crate::subjects::normalise_email;

/// What changing an account did.
#[derive(Debug, Clone)]
pub struct AccountChange {
    /// The last command written.
    pub outcome: Outcome,
    /// Whether the user may still log in (a deactivated user's sessions
    /// end).
    pub active: bool,
}

/// Changes to an account: fields of the user, and whether its password is
/// being replaced (the API keeps the credentials; the log records the
/// change).
#[derive(Debug, Clone, Default)]
pub struct AccountUpdate {
    /// Name, role, department, activity.
    pub user: input::UserUpdate,
    /// A new password is being set.
    pub password_changed: bool,
}

impl Helpdesk {
    /// Creates a user and its account: reserves the email, writes
    /// `user.created`, and gives the reservation back if the command is
    /// refused. `system` marks the account that records what happens to
    /// unknown accounts (bootstrap only).
    pub async fn create_account(
        &self,
        actor: &Actor,
        input: input::NewUser,
        system: bool,
    ) -> Result<Outcome, AppError> {
        self.check_department(input.department_id).await?;
        let id = input.user_id.unwrap_or_else(Uuid::now_v7);
        let reservation = Reservation {
            id,
            email: normalise_email(&input.email),
            name: input.name.clone(),
            role: input.role.clone(),
            department_id: input.department_id,
            system,
        };
        let pool = self.store.db();
        if !accounts::reserve(&pool, &reservation).await? {
            return Err(AppError::EmailTaken);
        }
        let input = input::NewUser {
            user_id: Some(id),
            ..input
        };
        match self.create_user(actor, input).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                accounts::release(&pool, id).await?;
                Err(e)
            }
        }
    }

    /// Changes a user (by an admin) and copies its role and activity into
    /// its account. An admin cannot deactivate themselves or give up their
    /// own admin role; a change must change something.
    pub async fn update_account(
        &self,
        actor: &Actor,
        user_id: Uuid,
        update: AccountUpdate,
        expected_version: Option<u64>,
    ) -> Result<AccountChange, AppError> {
        if self.user(user_id).await?.is_none() {
            return Err(AppError::NotFound {
                what: "user",
                id: user_id,
            });
        }
        let fields = update.user;
        if actor.id == Some(user_id) {
            check_own_change(fields.role.as_deref(), fields.active).map_err(AppError::rejected)?;
        }
        if let Some(Some(department)) = fields.department_id {
            self.check_department(Some(department)).await?;
        }
        let changes_fields = fields.name.is_some()
            || fields.role.is_some()
            || fields.department_id.is_some()
            || fields.active.is_some();
        if !changes_fields && !update.password_changed {
            return Err(AppError::rejected(UserError::NoChange { field: "user" }));
        }
        let mut outcome = None;
        if changes_fields {
            outcome = Some(
                self.update_user(actor, user_id, fields, expected_version)
                    .await?,
            );
        }
        if update.password_changed {
            let action = input::Action {
                action: "password_changed".into(),
                description: "the password was set by an admin".into(),
            };
            outcome = Some(self.record_general_action(actor, user_id, action).await?);
        }
        let active = self.sync_account(user_id).await?;
        let outcome = outcome.ok_or(AppError::Invalid {
            field: "user",
            message: "no command ran".into(),
        })?;
        Ok(AccountChange { outcome, active })
    }

    /// Copies a user's role and activity from its stream into its account;
    /// whether the user is active.
    pub async fn sync_account(&self, user_id: Uuid) -> Result<bool, AppError> {
        let (user, _) = self.user(user_id).await?.ok_or(AppError::NotFound {
            what: "user",
            id: user_id,
        })?;
        let active = !user.deactivated;
        accounts::set_access(&self.store.db(), user_id, user.role.as_str(), active).await?;
        Ok(active)
    }

    /// How many accounts exist (the system account included).
    pub async fn account_count(&self) -> Result<i64, AppError> {
        Ok(accounts::count(&self.store.db()).await?)
    }

    /// The system account, which records what happens to unknown accounts.
    pub async fn system_account(&self) -> Result<Option<Uuid>, AppError> {
        Ok(accounts::system_user(&self.store.db()).await?)
    }

    /// The account of an email (any spelling), the system account aside.
    pub async fn account_by_email(&self, email: &str) -> Result<Option<Uuid>, AppError> {
        Ok(accounts::by_email(&self.store.db(), &normalise_email(email)).await?)
    }

    /// A user's home department must exist.
    async fn check_department(&self, id: Option<Uuid>) -> Result<(), AppError> {
        let Some(id) = id else { return Ok(()) };
        if self.department(id).await?.is_none() {
            return Err(AppError::Rejected(DomainRefusal {
                code: "department_not_found",
                field: Some("department_id"),
                message: format!("department {id} does not exist"),
            }));
        }
        Ok(())
    }
}
