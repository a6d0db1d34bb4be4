//! What every console page shares: the frame around it (who is signed in,
//! the navigation their role may use, the sign-out form with its CSRF
//! token), the headers a page answers with, and errors as pages.

use actix_web::body::BoxBody;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::permissions::{self, Access};
use crate::routes::names::names;
use crate::state::AppState;

use super::csrf::Csrf;

/// The policy of every page: scripts and styles from the console's own
/// assets only, nothing inline, no framing, forms only to itself.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// One link of the navigation.
#[derive(Debug, Clone)]
pub struct NavLink {
    /// Where it goes.
    pub href: &'static str,
    /// What it says.
    pub label: &'static str,
    /// Its last path segment, for `data-testid="nav-…"`.
    pub key: &'static str,
    /// The page shown now.
    pub current: bool,
}

/// The pages of the navigation, in order; each shown to the roles its
/// row of the permission table lets in.
pub const PAGES: &[(&str, &str)] = &[
    ("/console/audit", "Audit log"),
    ("/console/tickets", "Tickets"),
    ("/console/integrity", "Integrity"),
    ("/console/operations", "Operations"),
];

/// Whether `role` may open the page at `path` (a GET row of the table).
pub fn may_open(role: Role, path: &str) -> bool {
    permissions::lookup("GET", path).is_some_and(|row| match row.access {
        Access::Public => true,
        Access::Roles(roles) => roles.contains(&role),
    })
}

/// The frame of a signed-in page.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The signed-in user's name.
    pub name: String,
    /// Their role.
    pub role: &'static str,
    /// The session's CSRF token, for the sign-out form and every other.
    pub csrf: String,
    /// The pages this role may open.
    pub nav: Vec<NavLink>,
}

impl Chrome {
    /// The frame for the caller of `req` (set by the gate), with `current`
    /// marked in the navigation.
    pub async fn of(state: &AppState, req: &HttpRequest, current: &str) -> Result<Self, ApiError> {
        let caller = req
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized {
                detail: "sign in first",
            })?;
        let csrf = req
            .extensions()
            .get::<Csrf>()
            .map(|c| c.0.clone())
            .unwrap_or_default();
        let found = names(state, &[caller.user_id], &[]).await?;
        Ok(Chrome {
            name: found
                .user(caller.user_id)
                .unwrap_or_else(|| caller.user_id.to_string()),
            role: caller.role.as_str(),
            csrf,
            nav: PAGES
                .iter()
                .filter(|(href, _)| may_open(caller.role, href))
                .map(|&(href, label)| NavLink {
                    href,
                    label,
                    key: href.rsplit('/').next().unwrap_or(href),
                    current: href == current,
                })
                .collect(),
        })
    }
}

/// A time as a page shows it: UTC ISO in `datetime` for the script to
/// put in the reader's zone, and readable UTC as the text meanwhile.
#[derive(Debug, Clone)]
pub struct Time {
    /// RFC 3339, UTC.
    pub iso: String,
    /// `2026-12-07 18:36:38 UTC`.
    pub text: String,
}

impl From<DateTime<Utc>> for Time {
    fn from(t: DateTime<Utc>) -> Self {
        Time {
            iso: t.to_rfc3339_opts(SecondsFormat::Millis, true),
            text: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        }
    }
}

fn page_headers(res: &mut HttpResponse<BoxBody>) {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    // A browser sends `Origin: null` with the forms of a `no-referrer`
    // page, which the gate must refuse as foreign; `same-origin` keeps the
    // referrer from other sites and lets a form name its own origin.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // Pages show personal data and audit entries: never from a cache.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A rendered template as a page with `status`.
pub fn html(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => {
            let mut res = HttpResponse::build(status).body(body);
            page_headers(&mut res);
            res
        }
        Err(e) => PageError(ApiError::internal(e)).error_response(),
    }
}

/// `303 See Other` to `location` (always a path on this server).
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    chrome: Option<Chrome>,
    status: u16,
    title: &'a str,
    detail: String,
}

/// A page that says why a request was refused or failed.
pub fn error_page(status: StatusCode, detail: String) -> HttpResponse {
    let page = ErrorPage {
        chrome: None,
        status: status.as_u16(),
        title: status.canonical_reason().unwrap_or("Error"),
        detail,
    };
    match page.render() {
        Ok(body) => {
            let mut res = HttpResponse::build(status).body(body);
            page_headers(&mut res);
            res
        }
        Err(_) => HttpResponse::build(status).body("error"),
    }
}

/// An [`ApiError`] answered as a page: the same status and headers
/// (`Retry-After`, `Allow`) as the API's problem, the detail as text.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl<E> From<E> for PageError
where
    ApiError: From<E>,
{
    fn from(e: E) -> Self {
        PageError(ApiError::from(e))
    }
}

impl PageError {
    /// The page.
    pub fn into_page(self) -> HttpResponse {
        self.error_response()
    }
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        // The problem's own response logs the cause and carries the
        // headers; only its body is swapped for a page.
        let problem = self.0.error_response();
        let mut page = error_page(problem.status(), self.0.to_string());
        for name in [header::RETRY_AFTER, header::ALLOW] {
            if let Some(v) = problem.headers().get(&name) {
                page.headers_mut().insert(name, v.clone());
            }
        }
        page
    }
}

/// What console handlers answer.
pub type PageResult = Result<HttpResponse, PageError>;
