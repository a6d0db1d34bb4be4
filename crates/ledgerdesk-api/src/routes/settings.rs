//! Account settings (admins change, admins and auditors read) and general
//! actions reported by integrations.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use ledgerdesk_app::input;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::{Cx, Json};
use crate::routes::{command_ok, etag, CommandResult};
use crate::state::AppState;

/// The account settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsView {
    /// Set values by key.
    #[schema(value_type = Object)]
    pub values: BTreeMap<String, Value>,
    /// The settings stream's version (also the `ETag`).
    pub version: u64,
}

/// A new value for a setting.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingRequest {
    /// Any JSON value (a string, number, boolean, array or object);
    /// `null` unsets the key.
    #[schema(value_type = serde_json::Value)]
    pub value: Value,
}

/// The `{key}` of a setting.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// Lowercase letters, digits, `.`, `_`, `-`.
    pub key: String,
}

/// An integration's own action, recorded as a general action of the caller.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityRequest {
    /// Action name, e.g. `crm.synced`.
    pub action: String,
    /// Description; keep personal data out.
    pub description: String,
}

/// The account settings.
#[utoipa::path(
    get,
    path = "/api/v1/settings",
    tag = "settings",
    responses((status = 200, description = "Settings", body = SettingsView, headers(("ETag" = String))))
)]
pub async fn get(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (settings, version) = state.helpdesk.settings().await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag(version)))
        .json(SettingsView {
            values: settings.values,
            version,
        }))
}

/// Set (or with `null` unset) one setting (admins).
#[utoipa::path(
    put,
    path = "/api/v1/settings/{key}",
    tag = "settings",
    params(KeyPath),
    request_body = SettingRequest,
    responses((status = 200, description = "Changed", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn change(
    state: web::Data<AppState>,
    cx: Cx,
    path: web::Path<KeyPath>,
    Json(body): Json<SettingRequest>,
) -> Result<HttpResponse, ApiError> {
    let change = input::SettingChange {
        key: path.into_inner().key,
        value: body.value,
    };
    let outcome = state
        .helpdesk
        .change_setting(&cx.actor, change, cx.if_match)
        .await?;
    Ok(command_ok(outcome))
}

/// Record a general action (integrations acting through a user's token).
#[utoipa::path(
    post,
    path = "/api/v1/activity",
    tag = "activity",
    request_body = ActivityRequest,
    responses((status = 200, description = "Recorded on the caller's stream", body = CommandResult, headers(("ETag" = String))))
)]
pub async fn activity(
    state: web::Data<AppState>,
    cx: Cx,
    Json(body): Json<ActivityRequest>,
) -> Result<HttpResponse, ApiError> {
    let action = input::Action {
        action: body.action,
        description: body.description,
    };
    let outcome = state
        .helpdesk
        .record_general_action(&cx.actor, cx.caller.user_id, action)
        .await?;
    Ok(command_ok(outcome))
}
