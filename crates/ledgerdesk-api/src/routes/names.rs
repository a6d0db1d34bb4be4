//! The one place the API turns user and department ids into the names
//! people read (authors, assignees, departments). Every name lookup goes
//! through [`names`], so where names come from can change in one place.

use std::collections::{BTreeSet, HashMap};

use uuid::Uuid;

use crate::db::NameTable;
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
/// are fine).
pub async fn names(
    state: &AppState,
    user_ids: &[Uuid],
    department_ids: &[Uuid],
) -> Result<Names, ApiError> {
    let distinct = |ids: &[Uuid]| -> Vec<Uuid> {
        ids.iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let users = state
        .db
        .display_names(NameTable::Users, &distinct(user_ids))
        .await?;
    let departments = state
        .db
        .display_names(NameTable::Departments, &distinct(department_ids))
        .await?;
    Ok(Names {
        users: users.into_iter().collect(),
        departments: departments.into_iter().collect(),
    })
}
