//! The console over HTTP, on both backends: signing in and out with a
//! cookie, the gate of console rows (sign-in redirect, 403 page, CSRF and
//! `Origin`), every page for every role, escaping, and that the audit
//! page's filters and export give exactly what the API gives.

use ledgerdesk_api::permissions::{Access, Auth, PERMISSIONS};
use ledgerdesk_tests::app::*;
use ledgerdesk_tests::{backend_tests, TestDb};
use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

backend_tests!(
    signing_in_sets_a_strict_cookie_and_signing_out_revokes_it,
    sign_in_goes_back_only_to_the_console,
    sign_in_is_throttled_and_recorded_like_the_api,
    forms_need_the_sessions_csrf_token_and_this_origin,
    every_console_route_answers_each_role_as_its_row_says,
    what_people_typed_is_shown_as_text,
    audit_filters_give_the_apis_rows_and_its_export,
    a_ticket_page_shows_its_conversation_history_and_past,
    the_ticket_list_filters_like_the_api,
    the_integrity_page_verifies_proves_and_hands_out_bundles,
    the_operations_page_shows_projections_and_rebuilds_them,
    staff_reply_note_change_status_and_assign_from_the_ticket_page,
    long_forms_are_read_and_too_long_ones_refused_by_size,
    a_date_beyond_the_calendar_is_a_400,
    forms_refuse_bytes_that_are_not_utf8_and_forwarded_hosts,
);

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A browser: no redirects followed, cookies handled by hand.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

async fn answer(res: reqwest::Response) -> Answer {
    Answer {
        status: res.status(),
        headers: res.headers().clone(),
        body: res.text().await.unwrap(),
    }
}

/// GET a page with the session cookie `session` (a session token).
async fn page(app: &TestApp, path: &str, session: Option<&str>) -> Answer {
    let mut req = browser().get(app.url(path));
    if let Some(s) = session {
        req = req.header("cookie", format!("ledgerdesk_session={s}"));
    }
    answer(req.send().await.unwrap()).await
}

/// POST a form with the session cookie and extra headers.
async fn form(
    app: &TestApp,
    path: &str,
    session: Option<&str>,
    fields: &[(&str, &str)],
    headers: &[(&str, String)],
) -> Answer {
    let mut req = browser()
        .post(app.url(path))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(s) = session {
        req = req.header("cookie", format!("ledgerdesk_session={s}"));
    }
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let body: String = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    answer(req.body(body).send().await.unwrap()).await
}

fn location(a: &Answer) -> &str {
    a.headers[LOCATION].to_str().unwrap()
}

/// The session token a sign-in set.
fn session_cookie(a: &Answer) -> (String, String) {
    let set = a.headers[SET_COOKIE].to_str().unwrap().to_string();
    let value = set
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("ledgerdesk_session=")
        .unwrap()
        .to_string();
    (value, set)
}

/// The CSRF token in a page's forms.
fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..].split('"').next().unwrap().to_string()
}

/// A page's HTML attribute values unescaped (for links).
fn unescape(s: &str) -> String {
    s.replace("&#38;", "&")
        .replace("&amp;", "&")
        .replace("&#x3d;", "=")
        .replace("&#61;", "=")
        .replace("&#x2f;", "/")
        .replace("&#47;", "/")
}

/// The `href` of the element with `data-testid="{id}"`.
fn href(body: &str, testid: &str) -> String {
    let marker = format!("data-testid=\"{testid}\"");
    let at = body.find(&marker).unwrap_or_else(|| panic!("no {testid}"));
    let tag_start = body[..at].rfind('<').unwrap();
    let tag = &body[tag_start..at + marker.len()];
    let h = tag.find("href=\"").expect("an href") + 6;
    unescape(tag[h..].split('"').next().unwrap())
}

fn count(body: &str, testid: &str) -> usize {
    body.matches(&format!("data-testid=\"{testid}\"")).count()
}

/// `data-position`s of the audit rows, in page order.
fn row_positions(body: &str) -> Vec<u64> {
    body.split("data-testid=\"audit-row\" data-position=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().parse().unwrap())
        .collect()
}

fn is_page(a: &Answer) {
    assert_eq!(
        a.headers[CONTENT_TYPE].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    assert_eq!(a.headers["content-security-policy"].to_str().unwrap(), CSP);
    // `no-referrer` would make a browser send its forms with `Origin: null`,
    // which the gate refuses: found by the browser test.
    assert_eq!(
        a.headers["referrer-policy"].to_str().unwrap(),
        "same-origin"
    );
    assert!(!a.body.contains("<script>"), "no inline script");
    assert!(!a.body.contains("style="), "no inline style");
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> String {
    let a = form(
        app,
        "/console/login",
        None,
        &[("email", email), ("password", password)],
        &[],
    )
    .await;
    assert_eq!(a.status, 303, "{}", a.body);
    session_cookie(&a).0
}

async fn user_with_password(app: &TestApp, role: &str) -> (Uuid, String) {
    let email = format!("{role}-{}@desk.example", Uuid::now_v7().simple());
    let res = app
        .post(
            "/api/v1/users",
            &app.admin,
            json!({"name": format!("A {role}"), "email": email, "role": role, "password": "password-123"}),
        )
        .await;
    let id = ok_json(res).await["id"].as_str().unwrap().parse().unwrap();
    (id, email)
}

async fn signing_in_sets_a_strict_cookie_and_signing_out_revokes_it(db: &TestDb) {
    let app = spawn_app(db).await;
    let root = page(&app, "/", None).await;
    assert_eq!((root.status.as_u16(), location(&root)), (303, "/console/"));
    let start = page(&app, "/console/", None).await;
    assert_eq!(start.status, 303);
    assert_eq!(location(&start), "/console/login?next=%2Fconsole%2F");

    let login = page(&app, "/console/login?next=%2Fconsole%2Ftickets", None).await;
    assert_eq!(login.status, 200);
    is_page(&login);
    for id in ["login-email", "login-password", "login-submit"] {
        assert!(login.body.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(login.body.contains("value=\"/console/tickets\""));

    let wrong = form(
        &app,
        "/console/login",
        None,
        &[("email", ADMIN_EMAIL), ("password", "not-it-at-all")],
        &[],
    )
    .await;
    assert_eq!(wrong.status, 401);
    is_page(&wrong);
    assert!(wrong.body.contains("data-testid=\"login-error\""));
    assert!(!wrong.headers.contains_key(SET_COOKIE));

    let ok = form(
        &app,
        "/console/login",
        None,
        &[
            ("email", ADMIN_EMAIL),
            ("password", ADMIN_PASSWORD),
            ("next", "/console/tickets"),
        ],
        &[],
    )
    .await;
    assert_eq!(ok.status, 303);
    assert_eq!(location(&ok), "/console/tickets");
    let (session, set) = session_cookie(&ok);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(flag), "{set} lacks {flag}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    // Behind a TLS proxy the cookie is Secure.
    let tls = form(
        &app,
        "/console/login",
        None,
        &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
        &[("x-forwarded-proto", "https".into())],
    )
    .await;
    assert!(session_cookie(&tls).1.contains("Secure"));

    // The same session as the API's: the login is recorded, the token works.
    let me = app.get("/api/v1/me", &session).await;
    assert_eq!(me.status(), 200);
    let start = page(&app, "/console/", Some(&session)).await;
    assert_eq!(
        (start.status.as_u16(), location(&start)),
        (303, "/console/audit")
    );

    let tickets = page(&app, "/console/tickets", Some(&session)).await;
    assert_eq!(tickets.status, 200);
    assert!(tickets.body.contains("data-testid=\"sign-out\""));
    let token = csrf(&tickets.body);
    let out = form(
        &app,
        "/console/logout",
        Some(&session),
        &[("csrf", &token)],
        &[],
    )
    .await;
    assert_eq!(
        (out.status.as_u16(), location(&out)),
        (303, "/console/login")
    );
    assert!(out.headers[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // Revoked everywhere.
    let after = page(&app, "/console/tickets", Some(&session)).await;
    assert_eq!(after.status, 303);
    assert!(location(&after).starts_with("/console/login"));
    assert_eq!(app.get("/api/v1/me", &session).await.status(), 401);

    // A deactivated account's browser session ends too.
    let (agent_id, email) = user_with_password(&app, "agent").await;
    let agent = sign_in(&app, &email, "password-123").await;
    assert_eq!(
        page(&app, "/console/tickets", Some(&agent)).await.status,
        200
    );
    ok_json(
        app.send(
            Method::PATCH,
            &format!("/api/v1/users/{agent_id}"),
            Some(&app.admin),
            Some(json!({"active": false})),
        )
        .await,
    )
    .await;
    assert_eq!(
        page(&app, "/console/tickets", Some(&agent)).await.status,
        303
    );
}

async fn sign_in_goes_back_only_to_the_console(db: &TestDb) {
    let app = spawn_app(db).await;
    let deep = page(&app, "/console/audit?q=refund&period=today", None).await;
    assert_eq!(
        location(&deep),
        "/console/login?next=%2Fconsole%2Faudit%3Fq%3Drefund%26period%3Dtoday"
    );
    for evil in [
        "https://evil.example/",
        "//evil.example/console/",
        "/\\evil.example",
        "/console//evil.example",
        "/console/../../evil",
        "javascript:alert(1)",
    ] {
        let a = form(
            &app,
            "/console/login",
            None,
            &[
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
                ("next", evil),
            ],
            &[],
        )
        .await;
        assert_eq!(
            (a.status.as_u16(), location(&a)),
            (303, "/console/"),
            "{evil}"
        );
    }
}

async fn forms_need_the_sessions_csrf_token_and_this_origin(db: &TestDb) {
    let app = spawn_app(db).await;
    let session = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let other = sign_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let token = csrf(&page(&app, "/console/tickets", Some(&session)).await.body);
    let others = csrf(&page(&app, "/console/tickets", Some(&other)).await.body);
    assert_ne!(token, others, "a token per session");
    let before = app.events().await.len();

    let own_origin = app.base.clone();
    let refusals = [
        (vec![], vec![]),
        (vec![("csrf", "")], vec![]),
        (vec![("csrf", "0000")], vec![]),
        (vec![("csrf", others.as_str())], vec![]),
        (
            vec![("csrf", token.as_str())],
            vec![("origin", "http://evil.example".to_string())],
        ),
        (
            vec![("csrf", token.as_str())],
            vec![("origin", "null".to_string())],
        ),
        (
            vec![("csrf", token.as_str())],
            vec![("sec-fetch-site", "cross-site".to_string())],
        ),
    ];
    for (fields, headers) in refusals {
        let a = form(&app, "/console/logout", Some(&session), &fields, &headers).await;
        assert_eq!(a.status, 403, "{fields:?} {headers:?}");
        is_page(&a);
    }
    // A sign-in posted from another site is refused before any check.
    let a = form(
        &app,
        "/console/login",
        None,
        &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
        &[("origin", "http://evil.example".to_string())],
    )
    .await;
    assert_eq!(a.status, 403);
    assert!(!a.headers.contains_key(SET_COOKIE));
    assert_eq!(app.events().await.len(), before, "nothing was written");
    assert_eq!(app.get("/api/v1/me", &session).await.status(), 200);

    let a = form(
        &app,
        "/console/logout",
        Some(&session),
        &[("csrf", &token)],
        &[("origin", own_origin)],
    )
    .await;
    assert_eq!(a.status, 303);
    assert_eq!(app.get("/api/v1/me", &session).await.status(), 401);
    assert_eq!(app.get("/api/v1/me", &other).await.status(), 200);
}

async fn every_console_route_answers_each_role_as_its_row_says(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let (_, auditor) = app.user("auditor").await;
    let ticket = app.ticket(&agent).await;
    let callers = [
        ("agent", &agent),
        ("admin", &app.admin),
        ("auditor", &auditor),
    ];
    let pages: Vec<_> = PERMISSIONS
        .iter()
        .filter(|p| p.auth == Auth::Cookie && p.method == "GET")
        .collect();
    assert!(pages.len() >= 10);
    for row in pages {
        let path = row
            .path
            .replace("{id}", &ticket.to_string())
            .replace("{name}", "console.css")
            .replace("{sha256}", &"0".repeat(64));
        let Access::Roles(roles) = row.access else {
            let a = page(&app, &path, None).await;
            assert!(
                a.status.is_success() || a.status == 303,
                "{path}: {}",
                a.status
            );
            continue;
        };
        if path.ends_with("/stream") {
            continue; // endless; tests/gate.rs walks its refusals
        }
        let a = page(&app, &path, None).await;
        assert_eq!(a.status, 303, "{path} without a session");
        assert!(location(&a).starts_with("/console/login"), "{path}");
        let a = page(&app, &path, Some("ldt_forged")).await;
        assert_eq!(a.status, 303, "{path} with a forged session");
        // A bearer token is no console session.
        let res = browser()
            .get(app.url(&path))
            .bearer_auth(&app.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "{path} with a bearer token");
        for (role, session) in callers {
            let allowed = roles.iter().any(|r| r.as_str() == role);
            let a = page(&app, &path, Some(session)).await;
            if path == "/console/" {
                assert_eq!(a.status, 303, "the start sends {role} on");
                continue;
            }
            if !allowed {
                assert_eq!(a.status, 403, "{path} as {role}");
                is_page(&a);
                continue;
            }
            assert!(
                !matches!(a.status.as_u16(), 303 | 401 | 403) && a.status.as_u16() < 500,
                "{path} as {role}: {}",
                a.status
            );
            let html = a
                .headers
                .get(CONTENT_TYPE)
                .is_some_and(|v| v.to_str().unwrap().starts_with("text/html"));
            if html {
                is_page(&a);
                if !path.ends_with("/bundle") {
                    // (a bundle without a range is the page with the
                    // form's complaint)
                    assert_eq!(a.status, 200, "{path} as {role}");
                }
                assert!(a.body.contains("data-testid=\"sign-out\""), "{path}");
                assert!(a
                    .body
                    .contains(&format!("<span class=\"role\">{role}</span>")));
            }
        }
    }
    // The navigation offers what the role may open, and no more.
    let agent_page = page(&app, "/console/tickets", Some(&agent)).await.body;
    assert!(agent_page.contains("data-testid=\"nav-tickets\""));
    assert!(!agent_page.contains("data-testid=\"nav-audit\""));
    let auditor_page = page(&app, "/console/tickets", Some(&auditor)).await.body;
    assert!(auditor_page.contains("data-testid=\"nav-audit\""));
    // Assets: long-cached, the right type.
    let css = page(&app, "/console/assets/console.css", None).await;
    assert_eq!(css.status, 200);
    assert!(css.headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age=31536000"));
    assert!(css.headers[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let js = page(&app, "/console/assets/console.js", None).await;
    assert!(js.headers[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(
        page(&app, "/console/assets/nope.js", None).await.status,
        404
    );
}

async fn what_people_typed_is_shown_as_text(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let res = app
        .post(
            "/api/v1/tickets",
            &agent,
            json!({"subject": "<script>alert(1)</script>", "body": "<img src=x onerror=alert(2)> & \"quotes\"",
                   "channel": "email", "requester": {"email": "eve@customer.example", "name": "<b>Eve</b>"}}),
        )
        .await;
    let id = ok_json(res).await["id"].as_str().unwrap().to_string();
    let ticket = page(&app, &format!("/console/tickets/{id}"), Some(&agent)).await;
    assert_eq!(ticket.status, 200);
    for raw in ["<script>alert(1)", "<img src=x", "<b>Eve"] {
        assert!(!ticket.body.contains(raw), "{raw} unescaped");
    }
    assert!(ticket
        .body
        .contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    assert!(ticket
        .body
        .contains("&#60;img src=x onerror=alert(2)&#62; &#38; &#34;quotes&#34;"));
    let list = page(&app, "/console/tickets", Some(&agent)).await;
    assert!(list
        .body
        .contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    assert!(!list.body.contains("<script>alert(1)"));
    // What is typed into a filter comes back escaped too.
    let search = page(
        &app,
        &format!("/console/audit?q={}", enc("\"><script>alert(3)</script>")),
        Some(&app.admin),
    )
    .await;
    assert_eq!(search.status, 200);
    assert!(!search.body.contains("<script>alert(3)"));
    assert!(search.body.contains("&#60;script&#62;alert(3)"));
}

async fn audit_filters_give_the_apis_rows_and_its_export(db: &TestDb) {
    let app = spawn_app(db).await;
    let (one_id, one) = app.user("agent").await;
    let (_, two) = app.user("agent").await;
    let (auditor_id, auditor) = app.user("auditor").await;
    for token in [&one, &two, &one] {
        let t = app.ticket(token).await;
        ok_json(
            app.post(
                &format!("/api/v1/tickets/{t}/status"),
                token,
                json!({"status": "open"}),
            )
            .await,
        )
        .await;
        ok_json(
            app.post(
                &format!("/api/v1/tickets/{t}/notes"),
                token,
                json!({"body": "checked"}),
            )
            .await,
        )
        .await;
    }
    let filter = format!("action=ticket.status_changed&actor={one_id}");
    let console = page(&app, &format!("/console/audit?{filter}"), Some(&auditor)).await;
    assert_eq!(console.status, 200, "{}", console.body);
    is_page(&console);
    let shown = row_positions(&console.body);
    assert_eq!(shown.len(), 2, "two status changes by agent one");
    let head = app.head().await;
    let api = ok_json(
        app.get(
            &format!("/api/v1/audit?{filter}&min_position={head}"),
            &auditor,
        )
        .await,
    )
    .await;
    let from_api: Vec<u64> = api["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["position"].as_u64().unwrap())
        .collect();
    assert_eq!(shown, from_api);
    assert_eq!(count(&console.body, "audit-ticket-link"), 2);
    assert!(console
        .body
        .contains("<option value=\"ticket.status_changed\" selected>"));

    // The search was recorded like the API's, with the same query.
    let recorded: Vec<Value> = app
        .stream(&format!("user-{auditor_id}"))
        .await
        .into_iter()
        .filter(|e| e.event_type == "user.audit_searched")
        .map(|e| e.payload_json().unwrap())
        .collect();
    assert_eq!(recorded.len(), 2, "the page's search and the API's");
    assert_eq!(recorded[0], recorded[1]);

    // Export with exactly the filters on screen equals the API's export.
    let csv_link = href(&console.body, "export-csv");
    assert!(csv_link.starts_with("/console/audit/export?"), "{csv_link}");
    assert!(href(&console.body, "export-ndjson").ends_with("format=ndjson"));
    let from_console = page(&app, &csv_link, Some(&auditor)).await;
    assert_eq!(
        from_console.status, 200,
        "{csv_link}: {}",
        from_console.body
    );
    assert!(from_console.headers[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let from_api = app
        .get(&format!("/api/v1/audit?{filter}&format=csv"), &auditor)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(from_console.body, from_api);
    assert_eq!(from_api.lines().count(), 3, "a header and two rows");

    // Paging walks the whole result, a page at a time.
    // (each API search is itself an entry)
    for _ in 0..55 {
        ok_json(app.get("/api/v1/audit?limit=1", &app.admin).await).await;
    }
    let everything = page(&app, "/console/audit", Some(&app.admin)).await;
    let first = row_positions(&everything.body);
    assert_eq!(first.len(), 50);
    assert!(first.windows(2).all(|w| w[0] > w[1]), "newest first");
    let older = href(&everything.body, "audit-older");
    let second = page(&app, &older, Some(&app.admin)).await;
    let next = row_positions(&second.body);
    assert!(!next.is_empty());
    assert!(next[0] < *first.last().unwrap());
    assert!(second.body.contains("data-testid=\"audit-newest\""));

    // A time frame in the reader's zone, and a refused filter on the form.
    let today = page(&app, "/console/audit?period=today&tz=0", Some(&auditor)).await;
    assert_eq!(today.status, 200);
    assert!(!row_positions(&today.body).is_empty());
    let yesterday = page(
        &app,
        &format!("/console/audit?period=yesterday&tz=0&{filter}"),
        Some(&auditor),
    )
    .await;
    assert!(row_positions(&yesterday.body).is_empty());
    let bad = page(&app, "/console/audit?query=action:&q=x", Some(&auditor)).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("data-testid=\"audit-error\""));
    // An agent has no audit log.
    assert_eq!(page(&app, "/console/audit", Some(&one)).await.status, 403);
}

async fn a_ticket_page_shows_its_conversation_history_and_past(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let (_, auditor) = app.user("auditor").await;
    let id = app.ticket(&agent).await;
    let created = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    ok_json(
        app.post(
            &format!("/api/v1/tickets/{id}/messages"),
            &agent,
            json!({"body": "We are on it."}),
        )
        .await,
    )
    .await;
    ok_json(
        app.post(
            &format!("/api/v1/tickets/{id}/notes"),
            &agent,
            json!({"body": "Called the fire brigade."}),
        )
        .await,
    )
    .await;
    ok_json(
        app.post(
            &format!("/api/v1/tickets/{id}/status"),
            &agent,
            json!({"status": "pending"}),
        )
        .await,
    )
    .await;
    let head = app.head().await;
    ok_json(
        app.get(&format!("/api/v1/tickets/{id}?min_position={head}"), &agent)
            .await,
    )
    .await;

    let now = page(&app, &format!("/console/tickets/{id}"), Some(&auditor)).await;
    assert_eq!(now.status, 200);
    is_page(&now);
    assert!(now.body.contains("Printer on fire"));
    assert!(now.body.contains("data-testid=\"ticket-requester\">Carol"));
    assert!(now.body.contains("status-pending"));
    assert_eq!(count(&now.body, "conversation-item"), 3);
    for text in [
        "It is on fire.",
        "We are on it.",
        "Called the fire brigade.",
    ] {
        assert!(now.body.contains(text), "{text}");
    }
    assert!(
        now.body.contains("internal-badge"),
        "the note is marked internal"
    );

    let history = page(
        &app,
        &format!("/console/tickets/{id}/history"),
        Some(&auditor),
    )
    .await;
    assert_eq!(history.status, 200);
    assert!(count(&history.body, "history-row") >= 4);
    assert!(history.body.contains("<del>new</del> → <ins>pending</ins>"));

    let at = enc(&created.to_rfc3339());
    let past = page(
        &app,
        &format!("/console/tickets/{id}?as_of={at}"),
        Some(&auditor),
    )
    .await;
    assert_eq!(past.status, 200);
    assert!(past.body.contains("data-testid=\"ticket-as-of\""));
    assert!(past.body.contains("status-new"));
    assert_eq!(count(&past.body, "conversation-item"), 1);
    // A local time from the form, with the reader's zone.
    // Whole seconds: a second after `created`, before the reply.
    let local = (created + chrono::Duration::hours(2) + chrono::Duration::seconds(1))
        .format("%Y-%m-%dT%H:%M:%S.%3f");
    let past = page(
        &app,
        &format!(
            "/console/tickets/{id}/history?as_of={}&tz=120",
            enc(&local.to_string()[..19])
        ),
        Some(&auditor),
    )
    .await;
    assert_eq!(past.status, 200, "{}", past.body);
    assert_eq!(count(&past.body, "history-row"), 1, "{}", past.body);

    let missing = page(
        &app,
        &format!("/console/tickets/{}", Uuid::now_v7()),
        Some(&auditor),
    )
    .await;
    assert_eq!(missing.status, 404);
    is_page(&missing);
}

async fn the_ticket_list_filters_like_the_api(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let a = app.ticket(&agent).await;
    let b = app.ticket(&agent).await;
    ok_json(
        app.post(
            &format!("/api/v1/tickets/{b}/status"),
            &agent,
            json!({"status": "open"}),
        )
        .await,
    )
    .await;
    let all = page(&app, "/console/tickets", Some(&agent)).await;
    assert_eq!(count(&all.body, "ticket-row"), 2);
    let open = page(&app, "/console/tickets?status=open", Some(&agent)).await;
    assert_eq!(count(&open.body, "ticket-row"), 1);
    assert!(open.body.contains(&format!("data-ticket=\"{b}\"")));
    assert!(!open.body.contains(&format!("data-ticket=\"{a}\"")));
    let bad = page(&app, "/console/tickets?assignee=not-an-id", Some(&agent)).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("data-testid=\"ticket-error\""));
}

async fn the_integrity_page_verifies_proves_and_hands_out_bundles(db: &TestDb) {
    use ledgerdesk_store::{checkpoint_now, verify_bundle, Bundle, CheckpointKey};
    let app = spawn_app(db).await;
    let (_, auditor) = app.user("auditor").await;
    app.ticket(&app.admin).await;
    let raw = db.open().await;
    let key = CheckpointKey::load_or_create(&app.dir.join("checkpoint.key")).unwrap();
    let cp = checkpoint_now(raw.as_ref(), &key).await.unwrap();

    let plain = page(&app, "/console/integrity", Some(&auditor)).await;
    assert_eq!(plain.status, 200);
    is_page(&plain);
    let api_key = ok_json(app.get("/api/v1/audit/public-key", &auditor).await).await;
    assert!(plain.body.contains(&format!(
        "data-testid=\"public-key-id\">{}<",
        api_key["key_id"].as_str().unwrap()
    )));
    assert!(count(&plain.body, "checkpoint-row") >= 1);
    assert!(
        !plain.body.contains("data-testid=\"verify-result\""),
        "only when asked"
    );
    assert!(plain.body.contains(&format!(
        "value=\"{}\" data-testid=\"bundle-to\"",
        cp.tree_size
    )));

    let verified = page(&app, "/console/integrity?verify=1", Some(&auditor)).await;
    assert!(verified.body.contains("data-ok=\"true\""));
    let api = ok_json(app.get("/api/v1/admin/verify", &auditor).await).await;
    assert!(verified.body.contains(&format!(
        "data-testid=\"verify-leaves\">{}<",
        api["leaves_checked"]
    )));

    let proof = page(&app, "/console/integrity?position=2", Some(&auditor)).await;
    assert_eq!(proof.status, 200);
    let api = ok_json(app.get("/api/v1/events/2/proof", &auditor).await).await;
    assert!(proof.body.contains(&format!(
        "data-testid=\"proof-root\">{}<",
        api["root_hash"].as_str().unwrap()
    )));
    let beyond = page(&app, "/console/integrity?position=999999", Some(&auditor)).await;
    assert_eq!(beyond.status, 404);
    assert!(beyond.body.contains("data-testid=\"proof-error\""));

    let res = browser()
        .get(app.url(&format!(
            "/console/integrity/bundle?from=1&to={}",
            cp.tree_size
        )))
        .header("cookie", format!("ledgerdesk_session={auditor}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    let bundle: Bundle = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(bundle.events.len() as u64, cp.tree_size);
    verify_bundle(&bundle, Some(&key.public_key())).expect("the bundle checks offline");
    let bad = page(
        &app,
        "/console/integrity/bundle?from=5&to=2",
        Some(&auditor),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("data-testid=\"bundle-error\""));
    // Admins too; agents not.
    assert_eq!(
        page(&app, "/console/integrity", Some(&app.admin))
            .await
            .status,
        200
    );
    let (_, agent) = app.user("agent").await;
    assert_eq!(
        page(&app, "/console/integrity", Some(&agent)).await.status,
        403
    );
}

async fn the_operations_page_shows_projections_and_rebuilds_them(db: &TestDb) {
    let app = spawn_app(db).await;
    app.ticket(&app.admin).await;
    let ops = page(&app, "/console/operations", Some(&app.admin)).await;
    assert_eq!(ops.status, 200);
    is_page(&ops);
    let api = ok_json(app.get("/api/v1/admin/projections", &app.admin).await).await;
    let names: Vec<&str> = api["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(count(&ops.body, "projection-row"), names.len());
    for name in &names {
        assert!(ops.body.contains(&format!("data-projection=\"{name}\"")));
    }
    let token = csrf(&ops.body);
    let started = form(
        &app,
        "/console/operations/tickets/rebuild",
        Some(&app.admin),
        &[("csrf", &token)],
        &[],
    )
    .await;
    assert_eq!(
        (started.status.as_u16(), location(&started)),
        (303, "/console/operations")
    );
    // It finishes, and the tickets read the same as before.
    let mut done = false;
    for _ in 0..200 {
        let body = page(&app, "/console/operations", Some(&app.admin))
            .await
            .body;
        if !body.contains("data-rebuilding") {
            done = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(done, "the rebuild ended");
    let list = ok_json(app.get("/api/v1/tickets", &app.admin).await).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let unknown = form(
        &app,
        "/console/operations/nothing/rebuild",
        Some(&app.admin),
        &[("csrf", &token)],
        &[],
    )
    .await;
    assert_eq!(unknown.status, 404);
    is_page(&unknown);
    let (_, auditor) = app.user("auditor").await;
    assert_eq!(
        page(&app, "/console/operations", Some(&auditor))
            .await
            .status,
        403
    );
}

async fn staff_reply_note_change_status_and_assign_from_the_ticket_page(db: &TestDb) {
    let app = spawn_app(db).await;
    let (agent_id, agent) = app.user("agent").await;
    let (_, auditor) = app.user("auditor").await;
    let id = app.ticket(&agent).await;
    let path = format!("/console/tickets/{id}");
    let shown = page(&app, &path, Some(&agent)).await;
    for form_id in ["reply-form", "note-form", "status-form", "assign-form"] {
        assert!(
            shown.body.contains(&format!("data-testid=\"{form_id}\"")),
            "{form_id}"
        );
    }
    let token = csrf(&shown.body);
    let agent_id = agent_id.to_string();
    let steps: [(&str, Vec<(&str, &str)>); 4] = [
        (
            "reply",
            vec![
                ("body", "Replaced the toner.\r\nAll good now."),
                ("channel", "email"),
            ],
        ),
        ("note", vec![("body", "Customer was polite.")]),
        ("status", vec![("status", "pending")]),
        ("assign", vec![("agent", agent_id.as_str())]),
    ];
    for (action, fields) in &steps {
        let mut fields = fields.clone();
        fields.push(("csrf", &token));
        let a = form(
            &app,
            &format!("{path}/{action}"),
            Some(&agent),
            &fields,
            &[],
        )
        .await;
        assert_eq!(a.status, 303, "{action}: {}", a.body);
        assert_eq!(location(&a), format!("{path}#conversation"));
    }
    let head = app.head().await;
    let view = ok_json(
        app.get(&format!("/api/v1/tickets/{id}?min_position={head}"), &agent)
            .await,
    )
    .await;
    assert_eq!(view["status"], "pending");
    assert_eq!(view["assignee"]["id"], agent_id.as_str());
    let items = view["messages"]["items"].as_array().unwrap();
    assert!(items
        .iter()
        .any(|i| i["body"] == "Replaced the toner.\r\nAll good now."
            && !i["internal"].as_bool().unwrap()));
    assert!(items
        .iter()
        .any(|i| i["body"] == "Customer was polite." && i["internal"] == true));
    let after = page(&app, &path, Some(&agent)).await;
    assert!(after.body.contains("Customer was polite."));

    // Refusals write nothing: an empty reply, a control character, an
    // auditor, a form without its token.
    let before = app.events().await.len();
    let empty = form(
        &app,
        &format!("{path}/reply"),
        Some(&agent),
        &[("body", "  "), ("csrf", &token)],
        &[],
    )
    .await;
    assert!(empty.status.is_client_error(), "{}", empty.status);
    is_page(&empty);
    let control = form(
        &app,
        &format!("{path}/note"),
        Some(&agent),
        &[("body", "a\u{7}b"), ("csrf", &token)],
        &[],
    )
    .await;
    assert_eq!(control.status, 400);
    let seen = page(&app, &path, Some(&auditor)).await;
    assert!(
        !seen.body.contains("data-testid=\"reply-form\""),
        "auditors read only"
    );
    let auditor_token = csrf(&seen.body);
    let refused = form(
        &app,
        &format!("{path}/note"),
        Some(&auditor),
        &[("body", "x"), ("csrf", &auditor_token)],
        &[],
    )
    .await;
    assert_eq!(refused.status, 403);
    let tokenless = form(
        &app,
        &format!("{path}/note"),
        Some(&agent),
        &[("body", "x")],
        &[],
    )
    .await;
    assert_eq!(tokenless.status, 403);
    assert_eq!(app.events().await.len(), before);
    // The past has no forms.
    let past = page(
        &app,
        &format!("{path}?as_of={}", enc(&chrono::Utc::now().to_rfc3339())),
        Some(&agent),
    )
    .await;
    assert!(!past.body.contains("data-testid=\"reply-form\""));
}

async fn sign_in_is_throttled_and_recorded_like_the_api(db: &TestDb) {
    let app = spawn_app(db).await;
    let (user_id, email) = user_with_password(&app, "agent").await;
    for _ in 0..MAX_FAILED {
        let a = form(
            &app,
            "/console/login",
            None,
            &[("email", &email), ("password", "wrong-password")],
            &[],
        )
        .await;
        assert_eq!(a.status, 401);
    }
    let a = form(
        &app,
        "/console/login",
        None,
        &[("email", &email), ("password", "password-123")],
        &[],
    )
    .await;
    assert_eq!(a.status, 429);
    is_page(&a);
    assert!(a.headers.contains_key("retry-after"));
    assert!(!a.headers.contains_key(SET_COOKIE));
    // The API counts the same attempts.
    let api = app
        .send(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": "password-123"})),
        )
        .await;
    assert_eq!(api.status(), 429);
    let failed = app
        .stream(&format!("user-{user_id}"))
        .await
        .into_iter()
        .filter(|e| e.event_type == "user.login_failed")
        .count();
    assert!(failed >= MAX_FAILED as usize, "{failed}");
}

/// A reply of the domain's full length, URL-encoded as a browser sends it,
/// reaches the ticket; a form beyond what the gate reads is a 413 that says
/// so, not a CSRF refusal.
async fn long_forms_are_read_and_too_long_ones_refused_by_size(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let id = app.ticket(&agent).await;
    let path = format!("/console/tickets/{id}");
    let token = csrf(&page(&app, &path, Some(&agent)).await.body);
    // 20,000 characters of which every fifth is a line break: about
    // 100 KB once encoded, above the JSON limit of 64 KiB.
    let long = "abcd\n".repeat(4_000);
    let reply = form(
        &app,
        &format!("{path}/reply"),
        Some(&agent),
        &[("body", &long), ("csrf", &token)],
        &[],
    )
    .await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    let huge = "x".repeat(300_000);
    let before = app.head().await;
    let refused = form(
        &app,
        &format!("{path}/note"),
        Some(&agent),
        &[("body", &huge), ("csrf", &token)],
        &[],
    )
    .await;
    assert_eq!(refused.status, 413);
    assert!(refused.body.contains("larger than"), "{}", refused.body);
    assert_eq!(app.head().await, before, "nothing written");
}

/// chrono reads a signed year of six digits; the day after the last one
/// the calendar holds is a 400 naming `to`, not a panic.
async fn a_date_beyond_the_calendar_is_a_400(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, auditor) = app.user("auditor").await;
    let a = page(
        &app,
        "/console/audit?period=custom&to=%2B262143-12-31",
        Some(&auditor),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("to"), "{}", a.body);
}

/// Found by an outsider's probe: a form whose bytes do not decode to UTF-8
/// was stored with U+FFFD in place of them, and an `X-Forwarded-Host` sent
/// by the client made a foreign `Origin` look like this server's.
async fn forms_refuse_bytes_that_are_not_utf8_and_forwarded_hosts(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let id = app.ticket(&agent).await;
    let path = format!("/console/tickets/{id}");
    let token = csrf(&page(&app, &path, Some(&agent)).await.body);
    let before = app.head().await;
    let res = browser()
        .post(app.url(&format!("{path}/note")))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("cookie", format!("ledgerdesk_session={agent}"))
        .body(format!("csrf={token}&body=%FF%FE-bad"))
        .send()
        .await
        .unwrap();
    let a = answer(res).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("UTF-8"), "{}", a.body);

    let forged = form(
        &app,
        &format!("{path}/note"),
        Some(&agent),
        &[("body", "from elsewhere"), ("csrf", &token)],
        &[
            ("origin", "http://evil.example".to_string()),
            ("x-forwarded-host", "evil.example".to_string()),
        ],
    )
    .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert_eq!(app.head().await, before, "nothing written");
}
