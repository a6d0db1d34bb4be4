//! The verifiable history over HTTP: the raw log (`/events`, also as
//! CloudEvents), inclusion and consistency proofs, the signed checkpoints,
//! the checkpoint key and the full audit. Everything here reads the *raw* store: events exactly as
//! stored and hashed, personal data still sealed, so what a client
//! recomputes matches the chain, the Merkle tree and the signed roots.
//!
//! See `docs/verifiable-history.md` for the tree, the signed text and how
//! an auditor checks a proof by hand.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use ledgerdesk_store::checkpoint::{
    checkpoint_at_or_before, checkpoints as list_checkpoints, BadCheckpoint, Checkpoint,
    CheckpointRange,
};
use ledgerdesk_store::hash::GENESIS_HASH;
use ledgerdesk_store::{
    consistency_proof, inclusion_proof, latest_checkpoint, verify_all, AuditError, EventStore,
    RecordedEvent,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::Query;
use crate::paging;
use crate::state::AppState;

/// The media type of a CloudEvents JSON batch (an array of events).
pub const CLOUDEVENTS_BATCH: &str = "application/cloudevents-batch+json";
/// `type` of a CloudEvent: this prefix, then the event type.
pub const CLOUDEVENT_TYPE_PREFIX: &str = "dev.ledgerdesk.";
/// `source` of a CloudEvent: this prefix, then `<stream_type>/<stream_id>`.
pub const CLOUDEVENT_SOURCE_PREFIX: &str = "/ledgerdesk/";

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            // The store's word for "the caller asked beyond what the log
            // holds"; handlers check the usual cases first to name the field.
            AuditError::OutOfRange(detail) => ApiError::BadRequest {
                code: "out_of_range",
                field: None,
                detail,
            },
            AuditError::NotCovered(position) => ApiError::NotFound {
                code: "not_covered",
                detail: format!(
                    "no signed checkpoint covers position {position} yet; \
                     ask again after the next checkpoint or pass tree_size"
                ),
            },
            other => ApiError::internal(other),
        }
    }
}

/// A whole number from the query, or a 400 naming the parameter.
fn number(name: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    value.map(|v| super::parse_position(name, v)).transpose()
}

/// Where a paged read of the log starts and how much it takes: after the
/// key a `cursor` of `kind` stands for, else after `after` (a position or
/// `seq` the client kept: where a consumer resumes), else from the start;
/// `limit` as on every list ([`paging::limit`]). A 400 names the bad one.
fn page(
    kind: &str,
    cursor: Option<&str>,
    after: Option<&str>,
    limit: Option<&str>,
) -> Result<(u64, u64), ApiError> {
    let after = match (cursor, number("after", after)?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_field(
                "cursor",
                "pass either cursor or after, not both",
            ))
        }
        (Some(c), None) => paging::decode_position_cursor(kind, c)?,
        (None, after) => after.unwrap_or(0),
    };
    let limit = match number("limit", limit)? {
        Some(n) => paging::limit(Some(i64::try_from(n).unwrap_or(i64::MAX)))?,
        None => paging::limit(None)?,
    };
    Ok((after, limit as u64))
}

/// The log's head position (0 when empty).
async fn head(store: &dyn EventStore) -> Result<u64, ApiError> {
    Ok(store.head().await?.position)
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

// ---------------------------------------------------------------------------
// GET /api/v1/events

/// `?after=&limit=&format=` of `GET /events`. Numbers are taken as text so
/// a bad one is answered with a problem naming it.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Events after this position (default 0: from the start); where a
    /// consumer that kept a position resumes. Not with `cursor`.
    #[param(value_type = Option<u64>, minimum = 0)]
    pub after: Option<String>,
    /// At most this many events (1 to 500, default 50).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// `ledger` (default) or `cloudevents`.
    #[param(value_type = Option<String>, pattern = "^(ledger|cloudevents)$")]
    pub format: Option<String>,
    /// Accepted like on every read; always met, since this reads the log
    /// itself.
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub min_position: Option<u64>,
}

/// An event exactly as stored and hashed.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerEvent {
    /// Global position (1, 2, 3 …, gap-free).
    pub position: u64,
    /// The event's UUID.
    pub event_id: String,
    /// The stream, e.g. `ticket-0190…`.
    pub stream_id: String,
    /// The stream's type, e.g. `ticket`.
    pub stream_type: String,
    /// The version within the stream.
    pub version: u64,
    /// The event type, e.g. `ticket.created`.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// When the store recorded it: RFC 3339, UTC, microseconds.
    pub recorded_at: String,
    /// The stored metadata JSON, embedded byte for byte.
    #[schema(value_type = Object)]
    pub metadata: Box<RawValue>,
    /// The stored payload JSON (personal data sealed), embedded byte for byte.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    /// This event's chain hash (hex).
    pub hash: String,
    /// The chain hash of the event at `position − 1` (64 zeros for
    /// position 1); null only when that event is missing from the database.
    pub prev_hash: Option<String>,
}

/// An event as a CloudEvents 1.0 JSON object.
#[derive(Debug, Serialize, ToSchema)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: &'static str,
    /// The event's UUID.
    pub id: String,
    /// `/ledgerdesk/<stream_type>/<stream_id>` (percent-encoded).
    pub source: String,
    /// `dev.ledgerdesk.<event_type>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The stream id.
    pub subject: String,
    /// When the store recorded it: RFC 3339, UTC, microseconds.
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: &'static str,
    /// The stored payload, byte for byte.
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
    /// Extension: the log position.
    pub ledgerposition: u64,
    /// Extension: the version within the stream.
    pub ledgerversion: u64,
    /// Extension: the stream's type.
    pub ledgerstreamtype: String,
    /// Extension: the payload's schema version.
    pub ledgerschemaversion: u32,
    /// Extension: the chain hash (hex).
    pub ledgerhash: String,
    /// Extension: the previous event's chain hash (absent only when that
    /// event is missing from the database).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledgerprevhash: Option<String>,
    /// Extension: the stored metadata JSON as text, needed with the rest to
    /// recompute `ledgerhash`.
    pub ledgermetadata: String,
    /// Extension: the acting user or customer, when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledgeractor: Option<String>,
    /// Extension: `agent`, `customer` or `system`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledgeractorkind: Option<String>,
    /// Extension: the request id that wrote the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledgercorrelation: Option<String>,
}

/// One item of `GET /events`: a ledger event, or a CloudEvent with
/// `format=cloudevents`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventItem {
    /// The native form.
    Ledger(LedgerEvent),
    /// CloudEvents 1.0.
    Cloud(CloudEvent),
}

/// A page of the log, in position order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// The events.
    pub items: Vec<EventItem>,
    /// Pass as `cursor` for the next page; absent when this page reached
    /// the head.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn ledger_event(e: RecordedEvent, prev_hash: Option<String>) -> Result<LedgerEvent, ApiError> {
    Ok(LedgerEvent {
        position: e.position,
        event_id: e.event_id.hyphenated().to_string(),
        recorded_at: rfc3339(e.recorded_at),
        metadata: raw_json(e.metadata, e.position)?,
        payload: raw_json(e.payload, e.position)?,
        stream_id: e.stream_id,
        stream_type: e.stream_type,
        version: e.version,
        event_type: e.event_type,
        schema_version: e.schema_version,
        hash: e.hash,
        prev_hash,
    })
}

/// The stored text, unchanged, as embeddable JSON; text that is not JSON
/// is a corrupt row, our failure.
fn raw_json(text: String, position: u64) -> Result<Box<RawValue>, ApiError> {
    RawValue::from_string(text)
        .map_err(|e| ApiError::internal(format!("event {position}: stored JSON unreadable: {e}")))
}

fn cloud_event(e: RecordedEvent, prev_hash: Option<String>) -> Result<CloudEvent, ApiError> {
    // Metadata that no longer parses still goes out as text; only the
    // convenience attributes are lost.
    let meta = e.metadata().ok();
    Ok(CloudEvent {
        specversion: "1.0",
        id: e.event_id.hyphenated().to_string(),
        source: format!(
            "{CLOUDEVENT_SOURCE_PREFIX}{}/{}",
            percent_encode(&e.stream_type),
            percent_encode(&e.stream_id)
        ),
        type_: format!("{CLOUDEVENT_TYPE_PREFIX}{}", e.event_type),
        time: rfc3339(e.recorded_at),
        datacontenttype: "application/json",
        data: raw_json(e.payload, e.position)?,
        ledgerposition: e.position,
        ledgerversion: e.version,
        ledgerschemaversion: e.schema_version,
        ledgerhash: e.hash,
        ledgerprevhash: prev_hash,
        ledgeractor: meta
            .as_ref()
            .and_then(|m| m.actor_id)
            .map(|id| id.to_string()),
        ledgeractorkind: meta.as_ref().and_then(|m| {
            serde_json::to_value(m.actor_kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
        }),
        ledgercorrelation: meta.and_then(|m| m.correlation_id),
        ledgermetadata: e.metadata,
        subject: e.stream_id,
        ledgerstreamtype: e.stream_type,
    })
}

/// RFC 3986 unreserved characters stay, everything else is `%XX`, so any
/// stream id makes a valid URI-reference.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `Accept` asks for a CloudEvents batch (and does not refuse it
/// with `q=0`).
fn wants_batch(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>() == Ok(0.0)
                })
            });
            media.eq_ignore_ascii_case(CLOUDEVENTS_BATCH) && !refused
        })
}

/// The log in position order, as stored (personal data still sealed), so a
/// client can recompute every chain hash and Merkle leaf. With
/// `format=cloudevents` each item is a CloudEvents 1.0 object; with
/// `Accept: application/cloudevents-batch+json` the answer is a bare
/// CloudEvents batch (a JSON array) of that media type. The next page is
/// also named in a `Link: <…>; rel="next"` header.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "ledger",
    params(EventsQuery),
    responses((status = 200, description = "A page of the log; `next_cursor` (and `Link: rel=next`) when there is more",
        content(
            (EventPage = "application/json"),
            (Vec<CloudEvent> = "application/cloudevents-batch+json")
        )))
)]
pub async fn events(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (after, limit) = page(
        "events",
        query.cursor.as_deref(),
        query.after.as_deref(),
        query.limit.as_deref(),
    )?;
    let batch = wants_batch(&req);
    let cloudevents = match query.format.as_deref() {
        None => batch,
        Some("cloudevents") => true,
        Some("ledger") if batch => {
            return Err(ApiError::bad_field(
                "format",
                format!("format=ledger cannot be sent as {CLOUDEVENTS_BATCH}"),
            ))
        }
        Some("ledger") => false,
        Some(_) => {
            return Err(ApiError::bad_field(
                "format",
                "format must be `ledger` or `cloudevents`",
            ))
        }
    };

    // One event before the page (for the first prev_hash) and one after it
    // (to know whether there is a next page), in the same read.
    let start = after.saturating_sub(1);
    let want = limit as usize + 1 + usize::from(after > 0);
    let rows = state.raw_store.read_all(start, want).await?;
    let mut prev: Option<(u64, String)> = if after == 0 {
        Some((0, GENESIS_HASH.to_string()))
    } else {
        None
    };
    let mut page = Vec::with_capacity(limit as usize);
    let mut more = false;
    for e in rows {
        if e.position <= after {
            prev = Some((e.position, e.hash));
            continue;
        }
        if page.len() as u64 == limit {
            more = true;
            break;
        }
        let prev_hash = prev
            .take()
            .filter(|(p, _)| *p + 1 == e.position)
            .map(|(_, h)| h);
        prev = Some((e.position, e.hash.clone()));
        page.push((e, prev_hash));
    }
    let next_cursor = more
        .then(|| {
            page.last()
                .map(|(e, _)| paging::position_cursor("events", e.position))
        })
        .flatten();

    let mut response = HttpResponse::Ok();
    paging::link_next(&mut response, &req, &["after"], next_cursor.as_deref());
    response.insert_header((header::VARY, "Accept"));
    if cloudevents {
        let items = page
            .into_iter()
            .map(|(e, prev)| cloud_event(e, prev))
            .collect::<Result<Vec<_>, _>>()?;
        if batch {
            let body = serde_json::to_vec(&items).map_err(ApiError::internal)?;
            return Ok(response
                .insert_header((
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(CLOUDEVENTS_BATCH),
                ))
                .body(body));
        }
        return Ok(response.json(EventPage {
            items: items.into_iter().map(EventItem::Cloud).collect(),
            next_cursor,
        }));
    }
    let items = page
        .into_iter()
        .map(|(e, prev)| ledger_event(e, prev).map(EventItem::Ledger))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(response.json(EventPage { items, next_cursor }))
}

// ---------------------------------------------------------------------------
// Proofs

/// A signed tree head; check `signature` (Ed25519, base64) over the signed
/// text with the key of `GET /audit/public-key`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedCheckpoint {
    /// Its row number (not signed).
    pub seq: u64,
    /// How many events the tree holds.
    pub tree_size: u64,
    /// The Merkle root (hex).
    pub root_hash: String,
    /// When it was signed: RFC 3339, UTC, microseconds (as signed).
    pub signed_at: String,
    /// The signing key's id.
    pub key_id: String,
    /// Ed25519 signature, standard base64.
    pub signature: String,
}

impl From<Checkpoint> for SignedCheckpoint {
    fn from(c: Checkpoint) -> Self {
        Self {
            seq: c.seq,
            tree_size: c.tree_size,
            root_hash: c.root_hash.to_hex(),
            signed_at: rfc3339(c.signed_at),
            key_id: c.key_id,
            signature: c.signature,
        }
    }
}

/// The signed checkpoint of exactly `size`, when one was made.
async fn checkpoint_of(
    store: &dyn EventStore,
    size: u64,
) -> Result<Option<SignedCheckpoint>, ApiError> {
    Ok(checkpoint_at_or_before(store, size)
        .await?
        .filter(|c| c.tree_size == size)
        .map(SignedCheckpoint::from))
}

/// The tree size a proof defaults to: the latest checkpoint's, so the proof
/// checks against a signed root; before the first checkpoint, the log's.
async fn default_size(store: &dyn EventStore) -> Result<(u64, bool), ApiError> {
    Ok(match latest_checkpoint(store).await? {
        Some(c) => (c.tree_size, true),
        None => (head(store).await?, false),
    })
}

/// The `{position}` of a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PositionPath {
    /// The event's log position (1, 2, 3 …).
    #[param(minimum = 1)]
    pub position: u64,
}

/// `?tree_size=` of an inclusion proof.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProofQuery {
    /// The tree to prove inclusion in (default: the latest checkpoint's
    /// size; the log's size before the first checkpoint).
    #[param(value_type = Option<u64>, minimum = 1)]
    pub tree_size: Option<String>,
    /// Accepted like on every read; always met, since this reads the log
    /// itself.
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub min_position: Option<u64>,
}

/// An inclusion proof (RFC 9162 §2.1.3); the same fields as
/// `ledgerdesk_store::InclusionProof`.
#[derive(Debug, Serialize, ToSchema)]
pub struct InclusionProofBody {
    /// The event's position.
    pub position: u64,
    /// Its leaf index: position − 1.
    pub leaf_index: u64,
    /// The tree the proof is for: the first `tree_size` events.
    pub tree_size: u64,
    /// SHA-256(0x00 ‖ canonical bytes of the event), hex.
    pub leaf_hash: String,
    /// `PATH(leaf_index, D[tree_size])`, leaf to root, hex.
    pub audit_path: Vec<String>,
    /// The tree's root as the server computes it; check against
    /// `checkpoint.root_hash` instead.
    pub root_hash: String,
    /// The signed checkpoint of this tree size, when one was made.
    pub checkpoint: Option<SignedCheckpoint>,
}

/// Inclusion proof of the event at `position` in the tree of `tree_size`
/// events. 404 `event_not_found` when the log has no such position;
/// 404 `not_covered` when `tree_size` is left out and the latest signed
/// checkpoint is older than the event; 400 (field `tree_size`) when the
/// tree is beyond the log or does not hold the position.
#[utoipa::path(
    get,
    path = "/api/v1/events/{position}/proof",
    tag = "ledger",
    params(PositionPath, ProofQuery),
    responses((status = 200, description = "The proof, and the signed checkpoint of that tree size when there is one", body = InclusionProofBody))
)]
pub async fn proof(
    state: web::Data<AppState>,
    path: web::Path<PositionPath>,
    query: Query<ProofQuery>,
) -> Result<HttpResponse, ApiError> {
    let asked = number("tree_size", query.tree_size.as_deref())?;
    Ok(HttpResponse::Ok().json(inclusion(&state, path.position, asked).await?))
}

/// The inclusion proof of the event at `position` in the tree of
/// `tree_size` events (default: the latest checkpoint's): what the proof
/// route answers and the console's integrity page shows.
pub async fn inclusion(
    state: &AppState,
    position: u64,
    asked: Option<u64>,
) -> Result<InclusionProofBody, ApiError> {
    let store = state.raw_store.as_ref();
    if position == 0 {
        return Err(ApiError::BadRequest {
            code: "invalid_path_parameter",
            field: Some("position".into()),
            detail: "positions start at 1".into(),
        });
    }
    let log = head(store).await?;
    if position > log {
        return Err(ApiError::NotFound {
            code: "event_not_found",
            detail: format!("there is no event at position {position}; the log holds {log}"),
        });
    }
    let tree_size = match asked {
        Some(size) => {
            if size > log {
                return Err(ApiError::bad_field(
                    "tree_size",
                    format!("tree_size {size} is beyond the log's {log} events"),
                ));
            }
            if size < position {
                return Err(ApiError::bad_field(
                    "tree_size",
                    format!("a tree of {size} events does not hold position {position}"),
                ));
            }
            size
        }
        None => match default_size(store).await? {
            (size, true) if size < position => return Err(AuditError::NotCovered(position).into()),
            (size, _) => size,
        },
    };
    let p = inclusion_proof(store, position, tree_size).await?;
    Ok(InclusionProofBody {
        position: p.position,
        leaf_index: p.leaf_index,
        tree_size: p.tree_size,
        leaf_hash: p.leaf_hash.to_hex(),
        audit_path: p.audit_path.iter().map(|h| h.to_hex()).collect(),
        root_hash: p.root_hash.to_hex(),
        checkpoint: checkpoint_of(store, tree_size).await?,
    })
}

/// `?from=&to=` of a consistency proof.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older tree size.
    #[param(value_type = u64, minimum = 0)]
    pub from: Option<String>,
    /// The newer tree size (default: the latest checkpoint's size; the
    /// log's size before the first checkpoint).
    #[param(value_type = Option<u64>, minimum = 0)]
    pub to: Option<String>,
    /// Accepted like on every read; always met, since this reads the log
    /// itself.
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub min_position: Option<u64>,
}

/// A consistency proof (RFC 9162 §2.1.4) between the trees of the first
/// `first` and the first `second` events; the same fields as
/// `ledgerdesk_store::ConsistencyProof`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyProofBody {
    /// `from`.
    pub first: u64,
    /// `to`.
    pub second: u64,
    /// The root at `first` (hex).
    pub first_root: String,
    /// The root at `second` (hex).
    pub second_root: String,
    /// `PROOF(first, D[second])`, hex.
    pub proof: Vec<String>,
    /// The signed checkpoint of size `first`, when one was made.
    pub first_checkpoint: Option<SignedCheckpoint>,
    /// The signed checkpoint of size `second`, when one was made.
    pub second_checkpoint: Option<SignedCheckpoint>,
}

/// Consistency proof that the tree of `to` events extends the tree of
/// `from` events. 400 naming `from` or `to` when `from > to` or a size is
/// beyond the log.
#[utoipa::path(
    get,
    path = "/api/v1/audit/consistency",
    tag = "ledger",
    params(ConsistencyQuery),
    responses((status = 200, description = "The proof with both roots, and the signed checkpoints of those sizes when there are", body = ConsistencyProofBody))
)]
pub async fn consistency(
    state: web::Data<AppState>,
    query: Query<ConsistencyQuery>,
) -> Result<HttpResponse, ApiError> {
    let store = state.raw_store.as_ref();
    let from = number("from", query.from.as_deref())?
        .ok_or_else(|| ApiError::bad_field("from", "from (the older tree size) is required"))?;
    let asked = number("to", query.to.as_deref())?;
    let log = head(store).await?;
    let to = match asked {
        Some(to) if to > log => {
            return Err(ApiError::bad_field(
                "to",
                format!("to {to} is beyond the log's {log} events"),
            ))
        }
        Some(to) => to,
        None => default_size(store).await?.0,
    };
    if from > to {
        return Err(ApiError::bad_field(
            "from",
            format!("from {from} is larger than to {to}"),
        ));
    }
    let p = consistency_proof(store, from, to).await?;
    Ok(HttpResponse::Ok().json(ConsistencyProofBody {
        first: p.first,
        second: p.second,
        first_root: p.first_root.to_hex(),
        second_root: p.second_root.to_hex(),
        proof: p.proof.iter().map(|h| h.to_hex()).collect(),
        first_checkpoint: checkpoint_of(store, from).await?,
        second_checkpoint: checkpoint_of(store, to).await?,
    }))
}

// ---------------------------------------------------------------------------
// GET /api/v1/audit/checkpoints

/// `?after=&since=&until=&limit=` of `GET /audit/checkpoints`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CheckpointsQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Checkpoints after this `seq` (default 0: from the first); where an
    /// auditor who kept a `seq` resumes. Not with `cursor`.
    #[param(value_type = Option<u64>, minimum = 0)]
    pub after: Option<String>,
    /// Signed at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Signed at or before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// At most this many (1 to 500, default 50).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// Accepted like on every read; always met, since this reads the log
    /// itself.
    #[param(minimum = 0)]
    #[serde(default, deserialize_with = "super::position")]
    pub min_position: Option<u64>,
}

/// A page of signed checkpoints, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointPage {
    /// The checkpoints.
    pub items: Vec<SignedCheckpoint>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The signed tree heads, oldest first: what an auditor keeps, to ask
/// later for a consistency proof from one of them to the newest. A time
/// frame (`since`, `until`) shows, for instance, that a quiet hour still
/// got its checkpoint. The next page is also named in a `Link: <…>;
/// rel="next"` header.
#[utoipa::path(
    get,
    path = "/api/v1/audit/checkpoints",
    tag = "ledger",
    params(CheckpointsQuery),
    responses((status = 200, description = "A page of checkpoints; `next_cursor` (and `Link: rel=next`) when there is more", body = CheckpointPage))
)]
pub async fn checkpoints(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: Query<CheckpointsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (after, limit) = page(
        "checkpoints",
        query.cursor.as_deref(),
        query.after.as_deref(),
        query.limit.as_deref(),
    )?;
    if let (Some(since), Some(until)) = (query.since, query.until) {
        if since > until {
            return Err(ApiError::bad_field("since", "since is later than until"));
        }
    }
    // One more than asked, to know whether there is a next page.
    let mut found = list_checkpoints(
        state.raw_store.as_ref(),
        CheckpointRange {
            after_seq: after,
            since: query.since,
            until: query.until,
            limit: limit as usize + 1,
        },
    )
    .await?;
    let more = found.len() as u64 > limit;
    found.truncate(limit as usize);
    let next_cursor = more
        .then(|| {
            found
                .last()
                .map(|c| paging::position_cursor("checkpoints", c.seq))
        })
        .flatten();
    let mut response = HttpResponse::Ok();
    paging::link_next(&mut response, &req, &["after"], next_cursor.as_deref());
    Ok(response.json(CheckpointPage {
        items: found.into_iter().map(SignedCheckpoint::from).collect(),
        next_cursor,
    }))
}

// ---------------------------------------------------------------------------
// The key and the audit

/// The key checkpoints are signed with.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKeyBody {
    /// Always `ed25519`.
    pub algorithm: String,
    /// Hex of the first 8 bytes of SHA-256(key); checkpoints name it.
    pub key_id: String,
    /// The 32-byte key, standard base64.
    pub public_key: String,
    /// The same key, hex.
    pub public_key_hex: String,
    /// The first line of the signed text.
    pub checkpoint_format: String,
}

/// The Ed25519 public key of the checkpoints. Compare its `key_id` with a
/// copy obtained out of band before trusting it.
#[utoipa::path(
    get,
    path = "/api/v1/audit/public-key",
    tag = "ledger",
    responses((status = 200, description = "The checkpoint key", body = PublicKeyBody))
)]
pub async fn public_key(state: web::Data<AppState>) -> HttpResponse {
    let info = state.public_key.info();
    HttpResponse::Ok().json(PublicKeyBody {
        algorithm: info.algorithm,
        key_id: info.key_id,
        public_key: info.public_key,
        public_key_hex: info.public_key_hex,
        checkpoint_format: info.checkpoint_format,
    })
}

/// The first checkpoint that fails the audit.
#[derive(Debug, Serialize, ToSchema)]
pub struct BadCheckpointBody {
    /// Its row number.
    pub seq: u64,
    /// Its tree size.
    pub tree_size: u64,
    /// What is wrong.
    pub problem: String,
}

impl From<BadCheckpoint> for BadCheckpointBody {
    fn from(b: BadCheckpoint) -> Self {
        Self {
            seq: b.seq,
            tree_size: b.tree_size,
            problem: b.to_string(),
        }
    }
}

/// The outcome of the full audit.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditBody {
    /// Whether everything verified.
    pub ok: bool,
    /// Events in the log.
    pub events: u64,
    /// Events whose chain link verified before the first break.
    pub verified: u64,
    /// The first position where the chain breaks or the stored Merkle leaf
    /// does not match its event; null when none.
    pub first_bad_position: Option<u64>,
    /// Stored Merkle leaves compared with their events.
    pub leaves_checked: u64,
    /// Checkpoints checked.
    pub checkpoints_checked: u64,
    /// The first checkpoint that fails, if any.
    pub first_bad_checkpoint: Option<BadCheckpointBody>,
    /// The latest checkpoint.
    pub latest_checkpoint: Option<SignedCheckpoint>,
    /// One line per problem found.
    pub findings: Vec<String>,
}

/// The whole check: the hash chain, every stored Merkle leaf against its
/// event, and every checkpoint (signature with the server's key, sizes, and
/// its root recomputed from the events as they are now). One pass over the
/// log; 200 whatever it finds, the body says whether it is intact.
#[utoipa::path(
    get,
    path = "/api/v1/admin/verify",
    tag = "ledger",
    responses((status = 200, description = "The audit report; `ok` says whether the history is intact", body = AuditBody))
)]
pub async fn verify(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(audit_report(&state).await?))
}

/// The whole check, as the verify route answers it and the console's
/// integrity page shows it.
pub async fn audit_report(state: &AppState) -> Result<AuditBody, ApiError> {
    // Nothing the caller sent can make the audit fail: every error is ours.
    let report = verify_all(state.raw_store.as_ref(), &state.public_key)
        .await
        .map_err(ApiError::internal)?;
    let first_bad_position = [
        report.chain.first_break.as_ref().map(|b| b.position),
        report.first_bad_leaf,
    ]
    .into_iter()
    .flatten()
    .min();
    Ok(AuditBody {
        ok: report.ok(),
        events: report.events,
        verified: report.chain.verified,
        first_bad_position,
        leaves_checked: report.leaves_checked,
        checkpoints_checked: report.checkpoints_checked,
        findings: report.findings(),
        first_bad_checkpoint: report.first_bad_checkpoint.map(Into::into),
        latest_checkpoint: report.latest_checkpoint.map(Into::into),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn stream_ids_make_valid_sources() {
        assert_eq!(percent_encode("ticket-01ab"), "ticket-01ab");
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn batch_is_chosen_by_accept_unless_refused() {
        let req = |accept: &str| {
            TestRequest::default()
                .insert_header((header::ACCEPT, accept))
                .to_http_request()
        };
        assert!(wants_batch(&req(CLOUDEVENTS_BATCH)));
        assert!(wants_batch(&req(
            "application/json;q=0.5, Application/CloudEvents-Batch+JSON"
        )));
        assert!(!wants_batch(&req("application/json")));
        assert!(!wants_batch(&req(
            "application/cloudevents-batch+json; q=0"
        )));
        assert!(!wants_batch(&TestRequest::default().to_http_request()));
    }

    #[test]
    fn numbers_name_their_parameter() {
        assert_eq!(number("after", Some("7")).unwrap(), Some(7));
        assert_eq!(number("after", None).unwrap(), None);
        assert_eq!(
            number("after", Some("9223372036854775807")).unwrap(),
            Some(i64::MAX as u64)
        );
        for bad in ["-1", "x", "1.5", "", "9223372036854775808"] {
            let e = number("after", Some(bad)).unwrap_err();
            assert_eq!(e.problem().field.as_deref(), Some("after"), "{bad}");
        }
    }
}
