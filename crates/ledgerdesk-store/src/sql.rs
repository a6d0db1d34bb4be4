//! SQL shared by both backends, and decoding of event rows.
//!
//! Both dialects accept `$N` parameters, so reads are written once.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::event::RecordedEvent;
use crate::plan::Tip;
use crate::StoreError;

pub(crate) const COLUMNS: &str = "position, stream_id, stream_type, version, event_id, event_type, schema_version, payload, metadata, recorded_at, hash";

pub(crate) const TIP: &str =
    "SELECT position, hash, recorded_at FROM events ORDER BY position DESC LIMIT 1";

/// Capacity reserved up front for a page of `read_all`: a caller's limit may
/// be far larger than the log.
pub(crate) const READ_ALL_RESERVE: usize = 10_000;

pub(crate) fn read_all() -> String {
    format!("SELECT {COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2")
}

pub(crate) fn read_stream() -> String {
    format!(
        "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND version >= $2 AND version <= $3 \
         AND position <= $4 AND recorded_at <= $5 ORDER BY version"
    )
}

pub(crate) const POSITION_AT: &str =
    "SELECT COALESCE(MAX(position), 0) FROM events WHERE recorded_at <= $1";

/// Binds for `read_stream`: the optional bounds become inclusive numbers.
pub(crate) fn stream_bounds(range: &crate::StreamRange) -> [i64; 4] {
    [
        range.from_version.map_or(0, clamp),
        range.to_version.map_or(i64::MAX, clamp),
        range.until_position.map_or(i64::MAX, clamp),
        range.until_time.map_or(i64::MAX, |t| t.timestamp_micros()),
    ]
}

pub(crate) fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn from_micros(us: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
}

/// Decode one row selected with [`COLUMNS`].
pub(crate) fn decode_event<R>(row: &R) -> Result<RecordedEvent, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    let position: i64 = row.try_get(0)?;
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let event_id: String = row.try_get(4)?;
    let recorded_at: i64 = row.try_get(9)?;
    let version: i64 = row.try_get(3)?;
    let schema_version: i32 = row.try_get(6)?;
    Ok(RecordedEvent {
        position: u64::try_from(position).map_err(|_| corrupt("negative position".into()))?,
        stream_id: row.try_get(1)?,
        stream_type: row.try_get(2)?,
        version: u64::try_from(version).map_err(|_| corrupt("negative version".into()))?,
        event_id: event_id
            .parse()
            .map_err(|e| corrupt(format!("event id: {e}")))?,
        event_type: row.try_get(5)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| corrupt("negative schema version".into()))?,
        payload: row.try_get(7)?,
        metadata: row.try_get(8)?,
        recorded_at: from_micros(recorded_at)
            .ok_or_else(|| corrupt("recorded_at out of range".into()))?,
        hash: row.try_get(10)?,
    })
}

/// Decode the row of [`TIP`], or the genesis tip for an empty log.
pub(crate) fn decode_tip<R>(row: Option<R>) -> Result<Tip, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(match row {
        None => Tip {
            position: 0,
            hash: crate::hash::GENESIS_HASH.to_owned(),
            recorded_at_us: 0,
        },
        Some(row) => Tip {
            position: row.try_get::<i64, _>(0)?.max(0) as u64,
            hash: row.try_get(1)?,
            recorded_at_us: row.try_get(2)?,
        },
    })
}
