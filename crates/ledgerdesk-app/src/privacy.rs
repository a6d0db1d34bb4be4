//! Erasure of a data subject's personal data (crypto-shredding), in the one
//! order that keeps the log honest: the vault says whether there is
//! anything to erase, the event is recorded first (data never reads
//! `[erased]` without the log saying who erased it and when), then the
//! caller's files, then the key. A failure after the event leaves the
//! subject held, so the same request can simply be sent again.

use std::future::Future;

use uuid::Uuid;

use crate::actor::Actor;
use crate::error::AppError;
use crate::helpdesk::{Helpdesk, Outcome};
use crate::vault::{SubjectStatus, Vault};

/// What an erasure did.
#[derive(Debug, Clone)]
pub struct Erased {
    /// The `user.personal_data_erased` event.
    pub outcome: Outcome,
    /// How many files only the subject's tickets held were destroyed.
    pub files: usize,
}

impl Helpdesk {
    /// Erase `subject`'s personal data on behalf of `actor` (whose user
    /// stream records it). `erase_files` destroys the files only the
    /// subject's tickets hold (they live outside the log, with the caller)
    /// and says how many; it runs again for a subject already erased, to
    /// finish an erasure whose files were not all destroyed, which is then
    /// refused as [`AppError::AlreadyErased`].
    pub async fn erase_subject<E, F, Fut>(
        &self,
        vault: &Vault,
        actor: &Actor,
        subject: Uuid,
        mut erase_files: F,
    ) -> Result<Erased, E>
    where
        E: From<AppError>,
        F: FnMut(Uuid) -> Fut,
        Fut: Future<Output = Result<usize, E>>,
    {
        let store = |e| E::from(AppError::from(e));
        match vault.status(subject).await.map_err(store)? {
            SubjectStatus::Unknown => {
                return Err(AppError::NotFound {
                    what: "subject",
                    id: subject,
                }
                .into())
            }
            SubjectStatus::Erased => {
                erase_files(subject).await?;
                return Err(AppError::AlreadyErased { subject }.into());
            }
            SubjectStatus::Held => {}
        }
        let user_id = actor.id.ok_or(AppError::Invalid {
            field: "actor",
            message: "an erasure is recorded on the acting user's stream".into(),
        })?;
        let outcome = self.record_erasure(actor, user_id, subject).await?;
        // The files before the key: should destroying them fail, the
        // subject is still held and a repeated request finishes both.
        let files = erase_files(subject).await?;
        vault.erase(subject).await.map_err(store)?;
        tracing::info!(%subject, position = outcome.position, files, "personal data erased");
        Ok(Erased { outcome, files })
    }
}
