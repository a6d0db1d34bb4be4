//! The one place the API turns user and department ids into the names
//! people read (authors, assignees, departments). Every name lookup goes
//! through [`names`], so where names come from can change in one place.

use std::collections::HashMap;

use ledgerdesk_projections::people;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// Display names of users and departments.
#[derive(Debug, Default, Clone)]
pub struct Names {
    users: HashMap<Uuid, String>,
    departments: HashMap<Uuid, String>,
}

impl Names {
    /// A user's name, if the user is known.
    pub fn user(&self, id: Uuid) -> Option<String> {
        self.users.get(&id).cloned()
    }

    /// A department's name, if it is known.
    pub fn department(&self, id: Uuid) -> Option<String> {
        self.departments.get(&id).cloned()
    }
}

/// The names of `user_ids` and `department_ids` (repeats and unknown ids
/// are fine), from the people projection.
pub async fn names(
    state: &AppState,
    user_ids: &[Uuid],
    department_ids: &[Uuid],
) -> Result<Names, ApiError> {
    let found = people::names(&state.store.db(), user_ids, department_ids).await?;
    Ok(Names {
        users: found.users,
        departments: found.departments,
    })
}
