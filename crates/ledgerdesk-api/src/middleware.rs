//! The layers a request passes, outermost first: [`observe`] (request id,
//! tracing span, metrics, security headers) wraps the whole application;
//! [`gate`] (token and the route's row of the permission table) and
//! [`idempotency`] (`Idempotency-Key` replay) wrap each route where
//! [`crate::routes::configure`] mounts it, so they run only once routing
//! has decided which handler answers.

use std::time::Instant;

use actix_web::body::{to_bytes, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{self, BytesMut};
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::auth::{token_hash, Caller};
use crate::caller::authorize;
use crate::db::{Idempotency, StoredResponse};
use crate::error::ApiError;
use crate::extract::RequestId;
use crate::permissions::{Access, Auth, Permission};
use crate::state::AppState;

/// The request id header, read and returned.
pub const REQUEST_ID: &str = "x-request-id";
/// The idempotency header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a replayed response.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Room for multipart boundaries and part headers around an upload's bytes.
pub const MULTIPART_FRAMING: usize = 65_536;
/// A claimed key with no response after this long is taken over (seconds).
const IDEMPOTENCY_STALE_SECS: i64 = 120;

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Request id, span, access log and metrics.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = method_name(req.method());
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let span = tracing::info_span!("request", %request_id, method, route = %route);
    let result = next.call(req).instrument(span.clone()).await;
    // Inner layers answer with responses; an error here is actix's own,
    // which it turns into a response itself: count it and pass it on.
    let mut res = match result {
        Ok(res) => res.map_into_boxed_body(),
        Err(e) => {
            let status = e.as_response_error().status_code().as_u16();
            if let Some(metrics) = metrics {
                metrics.observe(method, &route, status, started.elapsed());
            }
            return Err(e);
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), value);
    }
    secure_headers(res.headers_mut());
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(metrics) = metrics {
        metrics.observe(method, &route, status, elapsed);
    }
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered");
        } else {
            tracing::debug!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered");
        }
    });
    Ok(res)
}

/// Headers every answer carries. The API sends data, never pages, so the
/// policy forbids everything a browser could load or frame from it; an
/// answer that sets its own policy (a page) keeps it.
fn secure_headers(headers: &mut actix_web::http::header::HeaderMap) {
    let defaults = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

fn refuse(req: ServiceRequest, error: ApiError) -> ServiceResponse<BoxBody> {
    req.into_response(error.error_response())
}

/// The bearer token of a request, if well-formed.
fn bearer(req: &ServiceRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 256)
        .then_some(token)
}

/// Authenticate and authorise one route by its row of
/// [`crate::permissions::PERMISSIONS`] (console rows go to
/// [`crate::console::session::gate`], which reads the cookie instead):
/// public routes pass, the others need a live token (401) of an allowed
/// role (403). It wraps each route where it is mounted
/// ([`crate::routes::configure`]), so it judges the route that runs, not a
/// guess from the raw path.
pub async fn gate(
    row: &'static Permission,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if row.auth == Auth::Cookie {
        return crate::console::session::gate(row, req, next).await;
    }
    let Access::Roles(roles) = row.access else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(refuse(req, ApiError::internal("application state missing")));
    };
    let Some(token) = bearer(&req) else {
        return Ok(refuse(
            req,
            ApiError::Unauthorized {
                detail: "send a bearer token: Authorization: Bearer <token>",
            },
        ));
    };
    let caller = match authorize(&state, token_hash(token), row.method, row.path, roles).await {
        Ok(caller) => caller,
        Err(e) => return Ok(refuse(req, e)),
    };
    req.extensions_mut().insert(caller);
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// How large a body a route reads, so that the idempotency layer (which
/// buffers the body to fingerprint it) refuses what the route would refuse
/// before holding more of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// `http.max_json_bytes`.
    Json,
    /// `files.max_bytes` plus room for the multipart framing.
    File,
}

/// Replays the first response to a command sent again with the same
/// `Idempotency-Key` by the same user, writing nothing new. Only 2xx
/// responses are kept: a refused command wrote nothing and may be resent.
pub async fn idempotency(
    limit: BodyLimit,
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let writes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let key = req
        .headers()
        .get(IDEMPOTENCY_KEY)
        .map(|v| v.to_str().map(str::to_string));
    let caller = req.extensions().get::<Caller>().cloned();
    let (Some(key), Some(caller), true) = (key, caller, writes) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let bad_key = || {
        ApiError::bad_field(
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )
    };
    let key = match key {
        Ok(k) if valid_key(&k) => k,
        _ => return Ok(refuse(req, bad_key())),
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(refuse(req, ApiError::internal("application state missing")));
    };
    // Read the body to fingerprint the request, then hand it on; never more
    // of it than the route itself would read.
    let limit = match limit {
        BodyLimit::Json => state.max_json_bytes,
        BodyLimit::File => state.max_file_bytes as usize + MULTIPART_FRAMING,
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Ok(refuse(
            req,
            ApiError::PayloadTooLarge {
                limit: limit as u64,
            },
        ));
    }
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return Ok(refuse(
                req,
                ApiError::BadRequest {
                    code: "unreadable_body",
                    field: None,
                    detail: "the request body could not be read".into(),
                },
            ));
        };
        if body.len() + chunk.len() > limit {
            return Ok(refuse(
                req,
                ApiError::PayloadTooLarge {
                    limit: limit as u64,
                },
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    let mut hasher = Sha256::new();
    hasher.update(req.method().as_str());
    hasher.update(b" ");
    hasher.update(req.uri().to_string());
    hasher.update(b"\n");
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        hasher.update(ct.as_bytes());
    }
    hasher.update(b"\n");
    hasher.update(&body);
    let request_hash = hex::encode(hasher.finalize());
    req.set_payload(Payload::from(body));

    let begun = state
        .db
        .begin_idempotent(caller.user_id, &key, &request_hash, IDEMPOTENCY_STALE_SECS)
        .await;
    match begun {
        Err(e) => Ok(refuse(req, e.into())),
        Ok(Idempotency::Replay(stored)) => {
            let mut response =
                HttpResponse::build(StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK));
            for (name, value) in &stored.headers {
                response.insert_header((name.as_str(), value.as_str()));
            }
            response.insert_header((IDEMPOTENT_REPLAYED, "true"));
            Ok(req.into_response(response.body(stored.body)))
        }
        Ok(Idempotency::InFlight) => Ok(refuse(
            req,
            ApiError::Conflict {
                code: "idempotency_key_in_use",
                detail: "a request with this Idempotency-Key is still being processed".into(),
            },
        )),
        Ok(Idempotency::Mismatch) => Ok(refuse(
            req,
            ApiError::Unprocessable {
                code: "idempotency_key_reused",
                field: Some("Idempotency-Key".into()),
                detail: "this Idempotency-Key was used for a different request".into(),
            },
        )),
        Ok(Idempotency::Started) => {
            let result = next.call(req).await;
            let res = match result {
                Ok(res) if res.status().is_success() => res,
                other => {
                    if let Err(e) = state.db.abandon_idempotent(caller.user_id, &key).await {
                        tracing::warn!(error = %e, "could not release an idempotency key");
                    }
                    return other.map(ServiceResponse::map_into_boxed_body);
                }
            };
            let (http_req, http_res) = res.into_parts();
            let (head, body) = http_res.into_parts();
            let bytes = match to_bytes(body).await {
                Ok(b) => b,
                Err(e) => {
                    let e = ApiError::internal(e.into().to_string());
                    return Ok(ServiceResponse::new(http_req, e.error_response()));
                }
            };
            let kept = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];
            let stored = StoredResponse {
                status: head.status().as_u16(),
                headers: kept
                    .iter()
                    .filter_map(|name| {
                        let value = head.headers().get(name)?.to_str().ok()?;
                        Some((name.as_str().to_string(), value.to_string()))
                    })
                    .collect(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            };
            if let Err(e) = state
                .db
                .complete_idempotent(caller.user_id, &key, &stored)
                .await
            {
                tracing::warn!(error = %e, "could not keep an idempotent response");
            }
            Ok(ServiceResponse::new(
                http_req,
                head.set_body(bytes).map_into_boxed_body(),
            ))
        }
    }
}
