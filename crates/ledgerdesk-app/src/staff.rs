//! User, department and settings commands of [`Helpdesk`].

use ledgerdesk_domain::{
    settings, stream_id, Aggregate, Department, DepartmentCommand, Settings, SettingsCommand,
    Ticket, User, UserCommand,
};
use uuid::Uuid;

use crate::actor::Actor;
use crate::error::AppError;
use crate::helpdesk::{Helpdesk, Outcome};
use crate::input::{self, id_or_new};

impl Helpdesk {
    /// Creates a user account. The first one is created by a system actor:
    /// there is no agent yet to check.
    pub async fn create_user(
        &self,
        actor: &Actor,
        input: input::NewUser,
    ) -> Result<Outcome, AppError> {
        let user_id = id_or_new(input.user_id);
        let command = UserCommand::Create {
            user_id,
            name: input.name,
            email: input.email,
            role: input.role,
            department: input.department_id,
        };
        self.on_user(actor, user_id, None, true, command).await
    }

    /// Changes a user's name, role or department, or (de)activates it; works
    /// on deactivated users, which is how they come back.
    pub async fn update_user(
        &self,
        actor: &Actor,
        user_id: Uuid,
        input: input::UserUpdate,
        expected_version: Option<u64>,
    ) -> Result<Outcome, AppError> {
        let command = UserCommand::Update {
            name: input.name,
            role: input.role,
            department: input.department_id,
            active: input.active,
        };
        self.on_user(actor, user_id, expected_version, true, command)
            .await
    }

    /// Records a successful login (refused for deactivated users).
    pub async fn log_in(&self, actor: &Actor, user_id: Uuid) -> Result<Outcome, AppError> {
        self.on_user(actor, user_id, None, true, UserCommand::LogIn)
            .await
    }

    /// Records a failed login. The actor is not checked: whoever failed to
    /// log in has no session, and attempts on deactivated accounts must be
    /// recorded too.
    pub async fn fail_login(
        &self,
        actor: &Actor,
        user_id: Uuid,
        input: input::LoginFailure,
    ) -> Result<Outcome, AppError> {
        let command = UserCommand::FailLogin {
            reason: input.reason,
        };
        self.on_user(actor, user_id, None, false, command).await
    }

    /// Records a logout.
    pub async fn log_out(&self, actor: &Actor, user_id: Uuid) -> Result<Outcome, AppError> {
        self.on_user(actor, user_id, None, true, UserCommand::LogOut)
            .await
    }

    /// Changes a user's availability.
    pub async fn change_user_state(
        &self,
        actor: &Actor,
        user_id: Uuid,
        input: input::StateChange,
    ) -> Result<Outcome, AppError> {
        let command = UserCommand::ChangeState { to: input.state };
        self.on_user(actor, user_id, None, true, command).await
    }

    /// Records that a user opened a ticket, which must exist.
    pub async fn view_ticket(
        &self,
        actor: &Actor,
        user_id: Uuid,
        ticket_id: Uuid,
    ) -> Result<Outcome, AppError> {
        if self.ticket(ticket_id).await?.is_none() {
            return Err(AppError::NotFound {
                what: Ticket::STREAM_TYPE,
                id: ticket_id,
            });
        }
        let command = UserCommand::ViewTicket { ticket_id };
        self.on_user(actor, user_id, None, true, command).await
    }

    /// Records that a user left a ticket they were viewing.
    pub async fn leave_ticket(
        &self,
        actor: &Actor,
        user_id: Uuid,
        ticket_id: Uuid,
    ) -> Result<Outcome, AppError> {
        let command = UserCommand::LeaveTicket { ticket_id };
        self.on_user(actor, user_id, None, true, command).await
    }

    /// Records an action outside tickets (e.g. by an integration).
    pub async fn record_general_action(
        &self,
        actor: &Actor,
        user_id: Uuid,
        input: input::Action,
    ) -> Result<Outcome, AppError> {
        let command = UserCommand::RecordGeneralAction {
            action: input.action,
            description: input.description,
        };
        self.on_user(actor, user_id, None, true, command).await
    }

    /// Records that `user_id` searched (`json`), followed (`stream`) or
    /// exported (`csv`, `ndjson`) the audit log with `query`.
    pub async fn record_audit_access(
        &self,
        actor: &Actor,
        user_id: Uuid,
        query: &str,
        format: &str,
    ) -> Result<Outcome, AppError> {
        let command = UserCommand::RecordAuditAccess {
            query: query.to_string(),
            format: format.to_string(),
        };
        self.on_user(actor, user_id, None, true, command).await
    }

    /// Records that `user_id` erased `subject`'s personal data. The caller
    /// destroys the key once this is recorded (see `Vault::erase`), so the
    /// log never lacks the reason for data that reads `[erased]`.
    pub async fn record_erasure(
        &self,
        actor: &Actor,
        user_id: Uuid,
        subject: Uuid,
    ) -> Result<Outcome, AppError> {
        self.on_user(
            actor,
            user_id,
            None,
            true,
            UserCommand::RecordErasure { subject },
        )
        .await
    }

    /// Creates a department.
    pub async fn create_department(
        &self,
        actor: &Actor,
        input: input::NewDepartment,
    ) -> Result<Outcome, AppError> {
        let department_id = id_or_new(input.department_id);
        let command = DepartmentCommand::Create {
            department_id,
            name: input.name,
        };
        self.on_department(actor, department_id, None, command)
            .await
    }

    /// Renames a department.
    pub async fn rename_department(
        &self,
        actor: &Actor,
        department_id: Uuid,
        input: input::DepartmentRename,
        expected_version: Option<u64>,
    ) -> Result<Outcome, AppError> {
        let command = DepartmentCommand::Rename { name: input.name };
        self.on_department(actor, department_id, expected_version, command)
            .await
    }

    /// Stops filing and transferring tickets to a department.
    pub async fn deactivate_department(
        &self,
        actor: &Actor,
        department_id: Uuid,
        expected_version: Option<u64>,
    ) -> Result<Outcome, AppError> {
        let command = DepartmentCommand::Deactivate;
        self.on_department(actor, department_id, expected_version, command)
            .await
    }

    /// Lets a deactivated department take tickets again.
    pub async fn reactivate_department(
        &self,
        actor: &Actor,
        department_id: Uuid,
        expected_version: Option<u64>,
    ) -> Result<Outcome, AppError> {
        let command = DepartmentCommand::Reactivate;
        self.on_department(actor, department_id, expected_version, command)
            .await
    }

    /// Renames and/or (de)activates a department as one append, guarded
    /// by `expected_version` as a whole.
    pub async fn update_department(
        &self,
        actor: &Actor,
        department_id: Uuid,
        input: input::DepartmentUpdate,
        expected_version: Option<u64>,
    ) -> Result<Outcome, AppError> {
        let command = DepartmentCommand::Update {
            name: input.name,
            active: input.active,
        };
        self.on_department(actor, department_id, expected_version, command)
            .await
    }

    /// Sets (or, with `null`, unsets) an account setting. The outcome's id is
    /// nil: the settings are one account-wide stream.
    pub async fn change_setting(
        &self,
        actor: &Actor,
        input: input::SettingChange,
        expected_version: Option<u64>,
    ) -> Result<Outcome, AppError> {
        let command = SettingsCommand::Change {
            key: input.key,
            value: input.value,
        };
        let committed = self
            .run::<Settings, _>(
                settings::STREAM_ID,
                expected_version,
                &actor.metadata(),
                Some(actor),
                |_| Ok(command.clone()),
            )
            .await?;
        Ok(Outcome::new(Uuid::nil(), committed))
    }

    /// One command on a user stream; `check_actor` is false only where the
    /// actor has no account to check (failed logins).
    async fn on_user(
        &self,
        actor: &Actor,
        user_id: Uuid,
        expected_version: Option<u64>,
        check_actor: bool,
        command: UserCommand,
    ) -> Result<Outcome, AppError> {
        let is_create = matches!(command, UserCommand::Create { .. });
        let committed = self
            .run::<User, _>(
                &stream_id(User::STREAM_TYPE, user_id),
                expected_version,
                &actor.metadata(),
                check_actor.then_some(actor),
                |state| match state.id {
                    None if !is_create => Err(AppError::NotFound {
                        what: User::STREAM_TYPE,
                        id: user_id,
                    }),
                    _ => Ok(command.clone()),
                },
            )
            .await?;
        Ok(Outcome::new(user_id, committed))
    }

    async fn on_department(
        &self,
        actor: &Actor,
        department_id: Uuid,
        expected_version: Option<u64>,
        command: DepartmentCommand,
    ) -> Result<Outcome, AppError> {
        let is_create = matches!(command, DepartmentCommand::Create { .. });
        let committed = self
            .run::<Department, _>(
                &stream_id(Department::STREAM_TYPE, department_id),
                expected_version,
                &actor.metadata(),
                Some(actor),
                |state| match state.id {
                    None if !is_create => Err(AppError::NotFound {
                        what: Department::STREAM_TYPE,
                        id: department_id,
                    }),
                    _ => Ok(command.clone()),
                },
            )
            .await?;
        Ok(Outcome::new(department_id, committed))
    }
}
