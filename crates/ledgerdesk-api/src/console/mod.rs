//! The console: server-rendered pages for people, in the same binary as
//! the API (docs/console.md).
//!
//! # Layout
//! - [`session`]: sign-in and sign-out with a cookie session, and the
//!   gate of console rows (sign-in redirect, 403 page, `Origin` and CSRF
//!   check of every form).
//! - [`page`]: the frame of a page, its headers (a strict CSP) and errors
//!   as pages.
//! - [`audit`], [`tickets`], [`integrity`], [`operations`]: the pages,
//!   each a thin layer over the
//!   function the API's handler calls, so the console has no logic of its
//!   own to drift from the API's.
//! - The assets (one stylesheet, one script) are embedded here and served
//!   by [`asset`]; the templates live in `templates/console/` (askama,
//!   checked at compile time, every value escaped).

pub mod audit;
pub mod csrf;
pub mod integrity;
pub mod operations;
pub mod page;
pub mod session;
pub mod tickets;

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::error::ApiError;

const CSS: &str = include_str!("../../assets/console.css");
const JS: &str = include_str!("../../assets/console.js");

/// Appended to asset URLs, so a new build is fetched despite the cache.
pub const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /console/assets/{name}`: the stylesheet and the script, cached
/// for a long time (their URLs carry the version).
pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (body, content_type) = match name.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => {
            return Err(ApiError::NotFound {
                code: "asset_not_found",
                detail: format!("no asset {}", name.as_str()),
            })
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(body))
}

/// Everyone in the people projection but `hidden`, and every department,
/// for the pickers of the filter forms: a menu lists all of them, so the
/// pages are read to the end.
pub(crate) async fn people_and_departments(
    pool: &ledgerdesk_store::DbPool,
    hidden: &[uuid::Uuid],
) -> Result<
    (
        Vec<ledgerdesk_projections::people::Person>,
        Vec<ledgerdesk_projections::people::DepartmentRow>,
    ),
    ApiError,
> {
    use ledgerdesk_projections::{people, MAX_LIMIT};
    let (mut users, mut cursor) = (Vec::new(), None);
    loop {
        let page = people::users(pool, hidden, Some(MAX_LIMIT), cursor.as_deref()).await?;
        users.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let (mut departments, mut cursor) = (Vec::new(), None);
    loop {
        let page = people::departments(pool, Some(MAX_LIMIT), cursor.as_deref()).await?;
        departments.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok((users, departments))
}
