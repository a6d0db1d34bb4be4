//! `GET /openapi.json`: OpenAPI 3.1 generated from the handlers' `utoipa`
//! annotations, then completed from the code's own tables so it cannot
//! drift: security and roles from [`PERMISSIONS`], the problem responses
//! each kind of operation can give, and the `If-Match` / `Idempotency-Key`
//! headers.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use crate::permissions::{self, Access};
use crate::routes::{
    audit, auth, conversation, departments, files, health, ledger, privacy, settings, tickets,
    users, views,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ledgerdesk",
        description = "The HTTP API of ledgerdesk, an event-sourced helpdesk. Every change becomes events carrying the caller's identity, IP address, user agent and request id. Errors are application/problem+json (RFC 9457).",
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        serve,
        auth::login,
        auth::logout,
        auth::me,
        users::create,
        users::list,
        users::get,
        users::update,
        users::change_state,
        departments::create,
        departments::list,
        departments::update,
        tickets::create,
        views::list_tickets,
        conversation::get,
        conversation::messages,
        files::upload,
        tickets::transfer,
        tickets::split,
        tickets::merge,
        tickets::view,
        tickets::leave,
        files::download,
        settings::activity,
        settings::get,
        settings::change,
        views::agent_report,
        views::department_report,
        views::time_report,
        views::projections,
        views::rebuild,
        audit::search,
        audit::actions,
        audit::stream,
        privacy::erase,
        tickets::history,
        ledger::events,
        ledger::proof,
        ledger::consistency,
        ledger::checkpoints,
        ledger::public_key,
        ledger::verify,
    ),
    components(schemas(crate::error::Problem))
)]
struct ApiDoc;

/// Operations that take `If-Match: "<version>"`, besides the plain ticket
/// actions.
const IF_MATCH: &[(&str, &str)] = &[
    ("PATCH", "/api/v1/users/{id}"),
    ("PUT", "/api/v1/settings/{key}"),
    ("POST", "/api/v1/tickets/{id}/files"),
    ("POST", "/api/v1/tickets/{id}/transfer"),
    ("POST", "/api/v1/tickets/{id}/split"),
    ("POST", "/api/v1/tickets/{id}/merge"),
];

/// Whether an operation accepts `If-Match`: those above and every plain
/// ticket action.
pub fn takes_if_match(method: &str, path: &str) -> bool {
    IF_MATCH.iter().any(|(m, p)| *m == method && *p == path)
        || (method == "POST" && tickets::ACTIONS.iter().any(|a| a.path == path))
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

fn add_response(responses: &mut Map<String, Value>, status: &str, description: &str) {
    responses
        .entry(status.to_string())
        .or_insert_with(|| problem(description));
}

/// The completed document as JSON.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    doc["components"]["securitySchemes"] = json!({
        "bearer": { "type": "http", "scheme": "bearer", "description": "A token from POST /api/v1/auth/login" }
    });
    // The plain ticket actions are a table rather than annotated handlers.
    for action in tickets::ACTIONS {
        let (operation, (name, schema)) = action.openapi();
        doc["paths"][action.path]["post"] = operation;
        doc["components"]["schemas"][name] = schema;
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    let mut operations = Vec::new();
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let method = method.to_ascii_uppercase();
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            complete(&method, path, op);
            op.insert("operationId".into(), json!(operation_id(&method, path)));
            operations.push((method.to_ascii_lowercase(), path.clone()));
        }
    }
    // Links from what creates a ticket or a user to what addresses it, so
    // clients (and schemathesis' stateful phase) can follow the id.
    for (from, status, prefix) in [
        ("/api/v1/tickets", "201", "/api/v1/tickets/{id}"),
        ("/api/v1/users", "201", "/api/v1/users/{id}"),
    ] {
        let links: Map<String, Value> = operations
            .iter()
            .filter(|(_, path)| path.starts_with(prefix))
            .map(|(method, path)| {
                (
                    operation_id(method, path),
                    json!({
                        "operationRef": format!("#/paths/{}/{method}", path.replace('~', "~0").replace('/', "~1")),
                        "parameters": { "id": "$response.body#/id" }
                    }),
                )
            })
            .collect();
        if let Some(response) = paths
            .get_mut(from)
            .and_then(|item| item.get_mut("post"))
            .and_then(|op| op.get_mut("responses"))
            .and_then(|r| r.get_mut(status))
            .and_then(Value::as_object_mut)
        {
            response.insert("links".into(), Value::Object(links));
        }
    }
    doc
}

/// `post /api/v1/tickets/{id}/voice-messages` → `post_tickets_id_voice_messages`.
fn operation_id(method: &str, path: &str) -> String {
    let path = path
        .trim_start_matches("/api/v1")
        .replace(['/', '{', '}', '-', '.'], "_");
    let mut id = method.to_ascii_lowercase();
    for part in path.split('_').filter(|p| !p.is_empty()) {
        id.push('_');
        id.push_str(part);
    }
    id
}

fn complete(method: &str, path: &str, op: &mut Map<String, Value>) {
    let access = permissions::lookup(method, path).map_or(Access::Roles(&[]), |p| p.access);
    let roles = access.describe();
    let description = op
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    op.insert(
        "description".into(),
        json!(format!("{description}\n\nAllowed: {roles}.")
            .trim()
            .to_string()),
    );
    op.insert("x-roles".into(), json!(roles));
    let writes = method != "GET";
    let has_body = op.contains_key("requestBody");
    let has_path_param = path.contains('{');
    let protected = matches!(access, Access::Roles(_));
    let parameters = op
        .entry("parameters")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut parameters = parameters;
    let has_query = parameters.iter().any(|p| p["in"] == "query");
    if protected {
        op.insert("security".into(), json!([{ "bearer": [] }]));
    }
    if protected && writes {
        parameters.push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "Send the same key again (same user, same request) to get the first response back without writing anything new; kept at least 24 hours.",
            "schema": { "type": "string", "pattern": "^[!-~]{1,255}$" }
        }));
    }
    let if_match = takes_if_match(method, path);
    if if_match {
        parameters.push(json!({
            "name": "If-Match",
            "in": "header",
            "required": false,
            "description": "The stream version the command was decided on, e.g. \"3\" (the ETag); a stale version gets 412 and writes nothing.",
            "schema": { "type": "string", "pattern": "^(\\*|(W/)?\"?[0-9]{1,19}\"?)$" }
        }));
    }
    if parameters.is_empty() {
        op.remove("parameters");
    } else {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    if has_body || has_path_param || if_match || (protected && writes) || has_query {
        add_response(responses, "400", "Malformed input: bad JSON, a wrong type, a bad path, query or header value (field names it)");
    }
    if protected {
        add_response(responses, "401", "No valid bearer token");
        add_response(responses, "403", "The caller's role may not do this");
    }
    if has_path_param {
        add_response(responses, "404", "The addressed resource does not exist");
    }
    if protected && writes {
        add_response(responses, "409", "Conflicts with another request or existing data (email taken, Idempotency-Key in use, the stream kept changing)");
        add_response(responses, "422", "A business rule refused the command (code and field name it), or an Idempotency-Key reused for another request");
    }
    if if_match {
        add_response(
            responses,
            "412",
            "If-Match names a version the stream is no longer at; nothing was written",
        );
    }
    if has_body {
        add_response(responses, "413", "The body is larger than allowed");
        add_response(
            responses,
            "415",
            "The body is not in the media type this operation reads",
        );
        add_response(
            responses,
            "422",
            "A business rule refused the command (code and field name it)",
        );
    }
}

/// The document, serialised once.
pub fn json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_string(&document()).unwrap_or_default())
        .clone()
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::PERMISSIONS;
    use std::collections::BTreeSet;

    fn operations() -> BTreeSet<(String, String)> {
        let doc = document();
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                ops.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        ops
    }

    #[test]
    fn the_document_and_the_permission_table_name_the_same_routes() {
        // Console pages are for browsers, not API clients.
        let table: BTreeSet<(String, String)> = PERMISSIONS
            .iter()
            .filter(|p| p.auth == crate::permissions::Auth::Bearer)
            .map(|p| (p.method.to_string(), p.path.to_string()))
            .collect();
        assert_eq!(operations(), table);
    }

    #[test]
    fn a_ticket_and_its_conversation_have_typed_schemas() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        for name in [
            "TicketView",
            "ConversationPage",
            "ConversationItem",
            "Author",
            "Attachment",
        ] {
            assert!(
                schemas[name]["properties"].is_object(),
                "{name} is not typed"
            );
        }
        for path in ["/api/v1/tickets/{id}", "/api/v1/tickets/{id}/messages"] {
            let schema = &doc["paths"][path]["get"]["responses"]["200"]["content"]
                ["application/json"]["schema"];
            assert!(schema["$ref"].is_string(), "{path}: {schema}");
        }
    }

    #[test]
    fn protected_operations_declare_bearer_and_401_403() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let op = &doc["paths"]["/api/v1/tickets/{id}/notes"]["post"];
        assert_eq!(op["security"][0]["bearer"], json!([]));
        for status in ["400", "401", "403", "404", "412", "413", "415", "422"] {
            assert!(op["responses"][status].is_object(), "{status}");
        }
        let login = &doc["paths"]["/api/v1/auth/login"]["post"];
        assert!(login.get("security").is_none());
        assert!(login["responses"]["429"].is_object());
    }
}
