//! Extractors: a JSON body and a query string whose errors name the field,
//! the request context every command needs ([`Cx`]: caller, actor, `If-Match`), and the
//! handlers for actix's own extractor errors, so they are problem+json too.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{self, BytesMut};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use ledgerdesk_app::Actor;
use ledgerdesk_domain::fields::{self, is_refused_char};
use serde::de::DeserializeOwned;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The request id, from `X-Request-Id` or generated; set by the outermost
/// middleware and stored as the events' correlation id.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A JSON body (`application/json` or `…+json`). Malformed JSON and wrong
/// types are 400 naming the field (`requester.email`), a body over
/// `http.max_json_bytes` is 413, another media type 415.
#[derive(Debug)]
pub struct Json<T>(pub T);

fn is_json(req: &HttpRequest) -> bool {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(ct) = ct.to_str() else { return false };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map_or(65_536, |s| s.max_json_bytes);
        let json = is_json(req);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if !json {
                return Err(ApiError::UnsupportedMediaType {
                    detail: "send the body as application/json".into(),
                });
            }
            if declared.is_some_and(|n| n > limit) {
                return Err(ApiError::PayloadTooLarge {
                    limit: limit as u64,
                });
            }
            let mut body = BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|_| ApiError::BadRequest {
                    code: "unreadable_body",
                    field: None,
                    detail: "the request body could not be read".into(),
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::PayloadTooLarge {
                        limit: limit as u64,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(Json)
        })
    }
}

/// The query string as `T`. A value that does not parse is a 400 naming
/// its parameter (`since: input contains invalid characters`); actix's own
/// `web::Query` gives only serde's message, which names no parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T> Query<T> {
    /// The parsed query.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Query<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(parse_query(req.query_string()).map(Query))
    }
}

/// Deserialize a query string, naming the offending parameter on failure.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key.chars().chain(value.chars()).any(is_refused_char) {
            return Err(control_character(printable(&key)));
        }
    }
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // A repeated parameter fails at the top (path "."); serde's
        // "duplicate field `x`" names it.
        let named = named_in(&message, "duplicate field");
        let field = match (path.as_str(), named) {
            (".", Some(name)) => Some(name.to_string()),
            (".", None) => None,
            (p, _) => Some(p.to_string()),
        };
        ApiError::BadRequest {
            code: "invalid_query",
            detail: match &field {
                Some(f) => format!("{f}: {message}"),
                None => message,
            },
            field,
        }
    })
}

/// The field serde names in backticks in a message starting with `kind`
/// ("missing field `x`", "duplicate field `x`"): errors that belong to no
/// one field's value, so its path stops above it.
fn named_in<'m>(message: &'m str, kind: &str) -> Option<&'m str> {
    message
        .strip_prefix(kind)
        .and_then(|rest| rest.split('`').nth(1))
}

/// The 400 for text holding a character no text field accepts.
fn control_character(field: String) -> ApiError {
    ApiError::BadRequest {
        code: fields::CONTROL_CHARACTER,
        detail: format!(
            "{field} contains a control character (only tab, line feed and carriage return are allowed)"
        ),
        field: Some(field),
    }
}

/// A key as it may appear in a problem: its refused characters replaced.
fn printable(key: &str) -> String {
    key.chars()
        .map(|c| if is_refused_char(c) { '\u{fffd}' } else { c })
        .collect()
}

/// Refuses the first string (or object key) in `value` holding a character
/// of [`is_refused_char`], naming its path the way serde_path_to_error
/// does (`requester.name`, `tags[1]`).
///
/// This is the edge check for text, and it sits here rather than in each
/// input type because every JSON body of every command passes this
/// extractor: a field added tomorrow, a nested one, or free-form JSON (a
/// setting's value) cannot escape it, and only here is the client's own
/// path known. The domain's field rules refuse the same characters
/// (`fields::plain`) for text that arrives another way (an upload's file
/// name, the audit query language).
fn refuse_control_characters(value: &serde_json::Value, path: &str) -> Result<(), ApiError> {
    use serde_json::Value;
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(s) if s.chars().any(is_refused_char) => {
            Err(control_character(if path.is_empty() {
                ".".into()
            } else {
                path.into()
            }))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| refuse_control_characters(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().try_for_each(|(key, v)| {
            let here = join(&printable(key));
            if key.chars().any(is_refused_char) {
                return Err(control_character(here));
            }
            refuse_control_characters(v, &here)
        }),
        _ => Ok(()),
    }
}

/// Deserialize, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let parsed = parse_typed(body)?;
    // Typed first, so a body of the wrong shape keeps its own message; the
    // text is then walked as a whole, which the typed value cannot be.
    let tree: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
            code: "malformed_json",
            field: None,
            detail: format!("the body is not valid JSON: {e}"),
        })?;
    refuse_control_characters(&tree, "")?;
    Ok(parsed)
}

fn parse_typed<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de);
    if value.is_ok() {
        de.end().map_err(|e| ApiError::BadRequest {
            code: "malformed_json",
            field: None,
            detail: format!("the body is not valid JSON: {e}"),
        })?;
    }
    value.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::BadRequest {
                code: "malformed_json",
                field: None,
                detail: format!("the body is not valid JSON: {message}"),
            };
        }
        // "missing field `x`" names the field in the message, one level
        // below the path (an unknown field is already in the path).
        let named = named_in(&message, "missing field");
        let field = match (path.as_str(), named) {
            (".", Some(name)) => Some(name.to_string()),
            (".", None) => None,
            (p, Some(name)) => Some(format!("{p}.{name}")),
            (p, None) => Some(p.to_string()),
        };
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        ApiError::BadRequest {
            code: "invalid_field",
            field,
            detail: message,
        }
    })
}

/// What a command handler needs besides its body: who calls, the actor for
/// the events' metadata and the `If-Match` version.
#[derive(Debug, Clone)]
pub struct Cx {
    /// The authenticated caller.
    pub caller: Caller,
    /// The caller as the events' actor, with IP, user agent and request id.
    pub actor: Actor,
    /// `If-Match`, when sent.
    pub if_match: Option<u64>,
}

/// The actor for a request, acting as `user` (or the system when `None`).
pub fn actor_of(req: &HttpRequest, user: Option<uuid::Uuid>) -> Actor {
    let mut actor = match user {
        Some(id) => Actor::agent(id),
        None => Actor::system(),
    };
    if let Some(addr) = req.peer_addr() {
        actor = actor.with_ip(addr.ip().to_string());
    }
    if let Some(ua) = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        actor = actor.with_user_agent(ua.chars().take(512).collect::<String>());
    }
    if let Some(id) = req.extensions().get::<RequestId>() {
        actor = actor.with_correlation_id(id.0.clone());
    }
    actor
}

/// `If-Match: "3"` (or `3`, `W/"3"`) → 3; `*` → none.
pub fn if_match(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_field("If-Match", "If-Match must be one version, e.g. \"3\"");
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse::<u64>().map(Some).map_err(|_| bad())
}

impl FromRequest for Cx {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready((|| {
            let caller =
                req.extensions()
                    .get::<Caller>()
                    .cloned()
                    .ok_or(ApiError::Unauthorized {
                        detail: "a valid bearer token is required",
                    })?;
            Ok(Cx {
                actor: actor_of(req, Some(caller.user_id)),
                if_match: if_match(req)?,
                caller,
            })
        })())
    }
}

/// actix's path extractor errors → 400 problem naming the parameter.
pub fn path_error(err: actix_web::error::PathError, req: &HttpRequest) -> actix_web::Error {
    let param = req
        .match_pattern()
        .and_then(|p| {
            p.split('{')
                .nth(1)
                .and_then(|s| s.split('}').next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "path".to_string());
    ApiError::BadRequest {
        code: "invalid_path_parameter",
        field: Some(param),
        detail: err.to_string(),
    }
    .into()
}

/// actix's JSON extractor errors → problem (400, 413 or 415).
pub fn json_error(err: actix_web::error::JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::OverflowKnownLength { limit, .. } | E::Overflow { limit } => ApiError::PayloadTooLarge {
            limit: limit as u64,
        },
        E::ContentType => ApiError::UnsupportedMediaType {
            detail: "send the body as application/json".into(),
        },
        other => ApiError::BadRequest {
            code: "malformed_json",
            field: None,
            detail: other.to_string(),
        },
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        subject: String,
        requester: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        email: String,
    }

    fn field_of(body: &str) -> (String, Option<String>) {
        match parse_json::<Outer>(body.as_bytes()) {
            Err(e) => {
                let p = e.problem();
                (p.code, p.field)
            }
            Ok(_) => panic!("accepted {body}"),
        }
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Window {
        since: Option<chrono::DateTime<chrono::Utc>>,
        limit: Option<u32>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let ok: Window = parse_query("since=2026-01-01T00%3A00%3A00Z&limit=5").unwrap();
        assert_eq!(ok.limit, Some(5));
        assert!(ok.since.is_some());
        for (query, field) in [
            ("since=yesterday", Some("since")),
            ("limit=-1", Some("limit")),
            // An unknown parameter is named as well.
            ("limit=5&colour=red", Some("colour")),
            ("limit=5&limit=6", Some("limit")),
        ] {
            let p = parse_query::<Window>(query).unwrap_err().problem();
            assert_eq!(p.code, "invalid_query", "{query}");
            assert_eq!(p.field.as_deref(), field, "{query}");
        }
        let p = parse_query::<Window>("limit=x").unwrap_err().problem();
        assert!(p.detail.starts_with("limit: "), "{}", p.detail);
    }

    #[test]
    fn control_characters_are_refused_naming_the_path() {
        for (body, field) in [
            (
                r#"{"subject": "a\u0000b", "requester": {"email": "a"}}"#,
                "subject",
            ),
            (
                r#"{"subject": "a", "requester": {"email": "\u001b[31m"}}"#,
                "requester.email",
            ),
            (
                r#"{"subject": "a\u007f", "requester": {"email": "a"}}"#,
                "subject",
            ),
        ] {
            assert_eq!(
                field_of(body),
                ("control_character".into(), Some(field.into())),
                "{body}"
            );
        }
        let tree = serde_json::json!({"value": {"list": ["ok", "no\u{1}"]}});
        let p = refuse_control_characters(&tree, "").unwrap_err().problem();
        assert_eq!(p.field.as_deref(), Some("value.list[1]"));
        assert!(parse_json::<Outer>(
            br#"{"subject": "tab\tnew\nline\r", "requester": {"email": "a"}}"#
        )
        .is_ok());
        let p = parse_query::<Window>("limit=5&since=%00")
            .unwrap_err()
            .problem();
        assert_eq!(
            (p.code.as_str(), p.field.as_deref()),
            ("control_character", Some("since"))
        );
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(field_of("{"), ("malformed_json".into(), None));
        assert_eq!(
            field_of(r#"{"requester": {"email": "a@b"}}"#),
            ("invalid_field".into(), Some("subject".into()))
        );
        assert_eq!(
            field_of(r#"{"subject": "x", "requester": {"email": 3}}"#),
            ("invalid_field".into(), Some("requester.email".into()))
        );
        assert_eq!(
            field_of(r#"{"subject": "x", "requester": {}}"#),
            ("invalid_field".into(), Some("requester.email".into()))
        );
        assert_eq!(
            field_of(r#"{"subject": "x", "requester": {"email": "a"}, "extra": 1}"#),
            ("invalid_field".into(), Some("extra".into()))
        );
        assert_eq!(
            field_of(r#"{"subject": "x", "requester": {"email": "a"}} trailing"#).0,
            "malformed_json"
        );
    }
}

/// The `{id}` of a path.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// The id (UUID).
    pub id: uuid::Uuid,
}
