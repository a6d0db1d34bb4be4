//! Reading one's own writes: a query may pass the position a command
//! returned (`min_position`) and is answered once the projection it reads
//! has got there. Every route that reads a projection asks here, so the
//! waiting is done one way, by the projector's `wait_until` (woken by the
//! projection's own progress, never by polling in a handler).

use crate::error::ApiError;
use crate::state::AppState;

/// Wait until `projection` has reached `min_position`; a timeout is not an
/// error, the answer then says where the projection stood (`position`).
/// The wait wakes on the projection's own progress
/// ([`Projector::wait_until`](ledgerdesk_projections::Projector::wait_until)).
pub(crate) async fn reached(
    state: &AppState,
    projection: &str,
    min_position: Option<u64>,
) -> Result<u64, ApiError> {
    Ok(match min_position {
        Some(min) => {
            state
                .projector
                .wait_until(projection, min, state.projection_wait)
                .await?
        }
        None => state.projector.position(projection).await?,
    })
}
