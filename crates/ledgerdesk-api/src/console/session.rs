//! Browser sessions. Signing in runs the API's own login
//! ([`crate::routes::auth::sign_in`]: throttle, failure records, the same
//! sessions table), and the session's token travels in the
//! `ledgerdesk_session` cookie (`HttpOnly; SameSite=Strict`, `Secure` over
//! TLS) instead of a bearer header, so revocation, expiry and deactivation
//! work exactly as for the API.
//!
//! [`gate`] is the permission gate of console rows: no session is a
//! redirect to sign in, a role the row does not list is a 403 page, and a
//! form (any method but GET/HEAD) must come from this origin and carry the
//! session's CSRF token, checked before the handler runs.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{self, BytesMut};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use futures::StreamExt;

use crate::auth::{token_hash, Caller};
use crate::caller::authorize;
use crate::error::ApiError;
use crate::extract::Cx;
use crate::permissions::{Access, Permission};
use crate::routes::auth::{sign_in, sign_out};
use crate::state::AppState;

use super::csrf::{csrf_token, equal, Csrf, CSRF_FIELD};
use super::page::{error_page, html, may_open, see_other, Chrome, PageResult, PAGES};

/// The session cookie.
pub const COOKIE: &str = "ledgerdesk_session";

/// Whether a form comes from a page of this server: a browser names the
/// page's origin in `Origin` (and how it relates in `Sec-Fetch-Site`); a
/// request that names another, or `null`, is refused. Without either
/// header (an old browser, a script) the CSRF token alone decides.
fn same_origin(req: &HttpRequest) -> bool {
    if let Some(site) = req.headers().get("sec-fetch-site") {
        if !matches!(site.to_str(), Ok("same-origin" | "none")) {
            return false;
        }
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    // The host a browser addressed (`Host`, which a page of another site
    // cannot set), not `X-Forwarded-Host`, which any client can send.
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    let own = format!("{}://{}", req.connection_info().scheme(), host);
    origin.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&own))
}

/// Whether every name and value of a form decodes to UTF-8. The usual
/// decoding replaces what does not with U+FFFD, which would store text
/// the person never typed; the JSON API refuses such bytes, and so do
/// the console's forms.
fn form_is_utf8(body: &[u8]) -> bool {
    body.split(|b| *b == b'&').all(|pair| {
        let plus_as_space: Vec<u8> = pair
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        percent_encoding::percent_decode(&plus_as_space)
            .decode_utf8()
            .is_ok()
    })
}

/// A `next` that stays on this server's console: a path under
/// `/console/` with no scheme, host or backslash in it; anything else
/// becomes the console's start.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console/")
                && n.is_ascii()
                && !n.contains('\\')
                && !n.contains("//")
                && !n.chars().any(char::is_control)
                && no_dot_segments(n) =>
        {
            n.to_string()
        }
        _ => "/console/".to_string(),
    }
}

/// Whether a path has no `.` or `..` segment (also percent-encoded), which
/// a browser would resolve to leave `/console/`.
fn no_dot_segments(next: &str) -> bool {
    let path = next.split(['?', '#']).next().unwrap_or_default();
    path.split('/').all(|segment| {
        let plain = segment.to_ascii_lowercase().replace("%2e", ".");
        plain != "." && plain != ".."
    })
}

fn sign_in_redirect(req: &HttpRequest) -> HttpResponse {
    let mut location = "/console/login".to_string();
    if req.method() == Method::GET {
        let here = match req.uri().query() {
            Some(q) => format!("{}?{q}", req.uri().path()),
            None => req.uri().path().to_string(),
        };
        if safe_next(Some(&here)) == here {
            let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
            location.push_str("?next=");
            location.push_str(&next);
        }
    }
    let mut res = see_other(&location);
    // A cookie that named no live session is dropped.
    if req.cookie(COOKIE).is_some() {
        let _ = res.add_cookie(&removal());
    }
    res
}

fn refuse(req: ServiceRequest, res: HttpResponse) -> ServiceResponse<BoxBody> {
    req.into_response(res)
}

/// The gate of a console row (see the module doc).
pub async fn gate(
    row: &'static Permission,
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if writes && !same_origin(req.request()) {
        let page = error_page(
            StatusCode::FORBIDDEN,
            "this form was sent from another site; open the console and send it from there".into(),
        );
        return Ok(refuse(req, page));
    }
    let Access::Roles(roles) = row.access else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        let e = ApiError::internal("application state missing");
        return Ok(refuse(req, super::page::PageError(e).into_page()));
    };
    let token = req.cookie(COOKIE).map(|c| c.value().to_string());
    let Some(token) = token.filter(|t| !t.is_empty() && t.len() <= 256) else {
        let res = sign_in_redirect(req.request());
        return Ok(refuse(req, res));
    };
    let caller: Caller =
        match authorize(&state, token_hash(&token), row.method, row.path, roles).await {
            Ok(caller) => caller,
            Err(ApiError::Unauthorized { .. }) => {
                let res = sign_in_redirect(req.request());
                return Ok(refuse(req, res));
            }
            Err(ApiError::Forbidden { .. }) => {
                let page = error_page(
                    StatusCode::FORBIDDEN,
                    "your role may not open this page".into(),
                );
                return Ok(refuse(req, page));
            }
            Err(e) => return Ok(refuse(req, super::page::PageError(e).into_page())),
        };
    let csrf = csrf_token(&token);
    if writes {
        // The form is read here, before any handler, so that no form can
        // forget the check; the body goes back for the handler to read.
        // URL-encoding makes a form up to three times its text, and a reply
        // or note may hold 65,536 characters: forms get room for that, up
        // to actix's own limit for the body the handler reads.
        let limit = state.max_json_bytes.max(FORM_MAX);
        let mut payload = req.take_payload();
        let mut body = BytesMut::new();
        let mut too_large = false;
        while let Some(chunk) = payload.next().await {
            let Ok(chunk) = chunk else {
                too_large = true;
                break;
            };
            if body.len() + chunk.len() > limit {
                too_large = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        let sent = form_urlencoded::parse(&body)
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.into_owned());
        let valid = sent.is_some_and(|s| equal(s.as_bytes(), csrf.as_bytes()));
        if too_large {
            let page = error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the form is larger than {} KiB; shorten the text and send it again",
                    limit / 1024
                ),
            );
            return Ok(refuse(req, page));
        }
        if !form_is_utf8(&body) {
            let page = error_page(
                StatusCode::BAD_REQUEST,
                "the form is not valid UTF-8 text; nothing was saved".into(),
            );
            return Ok(refuse(req, page));
        }
        if !valid {
            let page = error_page(
                StatusCode::FORBIDDEN,
                "the form's security token is missing or out of date; reload the page and try again"
                    .into(),
            );
            return Ok(refuse(req, page));
        }
        req.set_payload(Payload::from(body.freeze()));
    }
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(Csrf(csrf));
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// The largest form the gate reads: actix's default limit for a body read
/// whole, which the form handlers do.
const FORM_MAX: usize = 262_144;

fn removal() -> Cookie<'static> {
    Cookie::build(COOKIE, "")
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::ZERO)
        .finish()
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    chrome: Option<Chrome>,
    next: String,
    email: String,
    error: Option<String>,
}

fn login_page(
    status: StatusCode,
    next: String,
    email: String,
    error: Option<String>,
) -> HttpResponse {
    html(
        status,
        &LoginPage {
            chrome: None,
            next,
            email,
            error,
        },
    )
}

/// `GET /`: the console.
pub async fn root() -> HttpResponse {
    see_other("/console/")
}

/// `GET /console/`: the first page the caller's role may open.
pub async fn start(cx: Cx) -> HttpResponse {
    let first = PAGES
        .iter()
        .map(|(href, _)| *href)
        .find(|href| may_open(cx.caller.role, href))
        .unwrap_or("/console/tickets");
    see_other(first)
}

/// `GET /console/login`: the sign-in form.
pub async fn login_form(req: HttpRequest) -> HttpResponse {
    let next = form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned());
    login_page(
        StatusCode::OK,
        safe_next(next.as_deref()),
        String::new(),
        None,
    )
}

/// `POST /console/login`: sign in, set the cookie, go where the reader
/// was going.
pub async fn login(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> PageResult {
    let mut email = String::new();
    let mut password = String::new();
    let mut next = None;
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "email" => email = v.into_owned(),
            "password" => password = v.into_owned(),
            "next" => next = Some(v.into_owned()),
            _ => {}
        }
    }
    let next = safe_next(next.as_deref());
    if email.trim().is_empty() || password.is_empty() {
        return Ok(login_page(
            StatusCode::BAD_REQUEST,
            next,
            email,
            Some("Enter your email and password.".into()),
        ));
    }
    let session = match sign_in(&req, &state, &email, password).await {
        Ok(session) => session,
        Err(ApiError::Unauthorized { .. }) => {
            return Ok(login_page(
                StatusCode::UNAUTHORIZED,
                next,
                email,
                Some("Wrong email or password.".into()),
            ))
        }
        Err(e @ (ApiError::BadRequest { .. } | ApiError::TooManyRequests { .. })) => {
            let mut res = login_page(e.status_code(), next, email, Some(e.to_string()));
            if let ApiError::TooManyRequests { retry_after } = e {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
            }
            return Ok(res);
        }
        Err(e) => return Err(e.into()),
    };
    let secure = req.connection_info().scheme() == "https";
    let ttl = (session.expires_at - chrono::Utc::now())
        .num_seconds()
        .max(0);
    let cookie = Cookie::build(COOKIE, session.token)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(CookieDuration::seconds(ttl))
        .finish();
    let mut res = see_other(&next);
    res.add_cookie(&cookie).map_err(ApiError::internal)?;
    Ok(res)
}

/// `POST /console/logout`: revoke the session and drop the cookie.
pub async fn logout(state: web::Data<AppState>, cx: Cx) -> PageResult {
    sign_out(&state, &cx).await?;
    let mut res = see_other("/console/login");
    res.add_cookie(&removal()).map_err(ApiError::internal)?;
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_console() {
        assert_eq!(safe_next(Some("/console/audit?q=x")), "/console/audit?q=x");
        assert_eq!(
            safe_next(Some("/console/audit?q=..")),
            "/console/audit?q=.."
        );
        for evil in [
            "https://evil.example/",
            "//evil.example/console/",
            "/console//evil.example",
            "/\\evil.example",
            "/console/\\evil",
            "/api/v1/me",
            "/console/../../evil",
            "/console/%2E%2e/api/v1/me",
            "/console/./x/../..",
            "/console/é",
            "",
        ] {
            assert_eq!(safe_next(Some(evil)), "/console/", "{evil}");
        }
        assert_eq!(safe_next(None), "/console/");
    }

    #[test]
    fn forms_must_decode_to_utf8() {
        assert!(form_is_utf8(b"body=caf%C3%A9+au+lait&csrf=ab"));
        assert!(form_is_utf8("body=café".as_bytes()));
        assert!(form_is_utf8(b"body=%EF%BF%BD"));
        assert!(!form_is_utf8(b"body=%FF%FE-bad&csrf=ab"));
        assert!(!form_is_utf8(b"csrf=ab&body=\xff"));
        assert!(!form_is_utf8(b"body=%ED%A0%80"));
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        assert_eq!(csrf_token("a"), csrf_token("a"));
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_ne!(csrf_token("a"), token_hash("a"));
        assert!(equal(b"abc", b"abc"));
        assert!(!equal(b"abc", b"abd"));
        assert!(!equal(b"abc", b"ab"));
    }
}
