//! The edge of the server. The permission gate, walked: every mounted
//! route, spelt every way a client can spell it, as every kind of caller,
//! must answer exactly what its row of the permission table says (the
//! spellings are generated from each route's pattern, so a new route is
//! walked the day it is added). Then the HTTP hygiene every answer owes:
//! `Allow` on 405, security headers, body limits before buffering, and
//! query values held to what the OpenAPI document says.

use futures::StreamExt;
use ledgerdesk_api::permissions::{Access, Auth, Permission, PERMISSIONS};
use ledgerdesk_tests::app::*;
use ledgerdesk_tests::{backend_tests, raw, TestDb};
use uuid::Uuid;

backend_tests!(
    every_spelling_of_every_route_answers_as_its_row_says,
    other_methods_get_405_with_allow,
    every_answer_carries_the_security_headers,
    an_idempotent_request_is_held_to_the_route_limit,
    log_positions_beyond_int64_are_refused_by_name,
    searched_text_is_held_to_its_limit,
);

/// One way of writing a route's path, and whether the router must take it
/// to that route (percent-encoded letters decode to the same path) or may
/// also answer 404 (dot segments, doubled slashes, case, trailing slash).
#[derive(Debug, Clone)]
struct Spelling {
    template: String,
    must_route: bool,
}

fn pct(c: u8, lower: bool) -> String {
    if lower {
        format!("%{c:02x}")
    } else {
        format!("%{c:02X}")
    }
}

/// Every spelling of `pattern` (with its `{param}`s still in place).
fn spellings(pattern: &str) -> Vec<Spelling> {
    let mut out = vec![Spelling {
        template: pattern.to_string(),
        must_route: true,
    }];
    let bytes = pattern.as_bytes();
    let mut in_param = false;
    let mut first_of_segment = true;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' => in_param = true,
            b'}' => in_param = false,
            b'/' => first_of_segment = true,
            _ if !in_param && (b.is_ascii_alphanumeric() || b == b'-' || b == b'.') => {
                // Each literal character encoded alone, in upper-case hex,
                // and the first of each segment in lower-case hex too.
                for lower in [false, true] {
                    if lower && !first_of_segment {
                        continue;
                    }
                    out.push(Spelling {
                        template: format!(
                            "{}{}{}",
                            &pattern[..i],
                            pct(b, lower),
                            &pattern[i + 1..]
                        ),
                        must_route: true,
                    });
                }
                first_of_segment = false;
            }
            _ => {}
        }
    }
    let slashes: Vec<usize> = pattern.match_indices('/').map(|(i, _)| i).collect();
    for &i in &slashes {
        let (head, tail) = pattern.split_at(i);
        for insert in [
            "/",
            "/.",
            "/%2e",
            "/%2E",
            "/x/..",
            "/x/%2e%2e",
            "/x/.%2e",
            "/%2e%2e/x",
        ] {
            out.push(Spelling {
                template: format!("{head}{insert}{tail}"),
                must_route: false,
            });
        }
        if i > 0 {
            out.push(Spelling {
                template: format!("{head}%2F{}", &tail[1..]),
                must_route: false,
            });
            out.push(Spelling {
                template: format!("{head}%5C{}", &tail[1..]),
                must_route: false,
            });
        }
    }
    for suffix in ["/", "//", "/.", "%20", ";x", "%00", "?x=1"] {
        out.push(Spelling {
            template: format!("{pattern}{suffix}"),
            must_route: suffix == "?x=1",
        });
    }
    out.push(Spelling {
        template: pattern.to_uppercase(),
        must_route: false,
    });
    // Each literal segment in upper case on its own.
    let segments: Vec<&str> = pattern.split('/').collect();
    for (k, segment) in segments.iter().enumerate() {
        if segment.is_empty() || segment.starts_with('{') {
            continue;
        }
        let mut changed = segments.clone();
        let upper = segment.to_uppercase();
        changed[k] = &upper;
        out.push(Spelling {
            template: changed.join("/"),
            must_route: false,
        });
    }
    out
}

fn concrete(template: &str) -> String {
    template
        .replace("{id}", &Uuid::now_v7().to_string())
        .replace("{sha256}", &"0".repeat(64))
        .replace("{key}", "some.key")
        .replace("{position}", "1")
        .replace("{name}", "no-such-projection")
}

#[derive(Debug, Clone, Copy)]
enum Who<'a> {
    Nobody,
    Forged,
    Role(&'static str, &'a str),
}

/// What the table says a caller gets from a route it reaches: `None` when
/// any answer but 401/403 is right (the caller may call it). A console
/// route sends the unknown caller to sign in (303), and refuses a form
/// without its CSRF token (403) whoever sends it.
fn expected(row: &Permission, who: Who) -> Option<u16> {
    if row.auth == Auth::Cookie {
        return match (row.access, who) {
            (Access::Public, _) => None,
            (Access::Roles(_), Who::Nobody | Who::Forged) => Some(303),
            (Access::Roles(_), Who::Role(..)) if row.method != "GET" => Some(403),
            (Access::Roles(roles), Who::Role(role, _)) => {
                (!roles.iter().any(|r| r.as_str() == role)).then_some(403)
            }
        };
    }
    match (row.access, who) {
        (Access::Public, _) => None,
        (Access::Roles(_), Who::Nobody | Who::Forged) => Some(401),
        (Access::Roles(roles), Who::Role(role, _)) => {
            (!roles.iter().any(|r| r.as_str() == role)).then_some(403)
        }
    }
}

async fn every_spelling_of_every_route_answers_as_its_row_says(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let (_, auditor) = app.user("auditor").await;
    let admin = app.admin.clone();
    let addr = app.base.trim_start_matches("http://").to_string();

    // The generator itself: a sample of what it must produce.
    let sample: Vec<String> = spellings("/api/v1/events")
        .into_iter()
        .map(|s| s.template)
        .collect();
    for must in [
        "/api/v1/%65vents",
        "/api/v1/event%73",
        "/api//v1/events",
        "/api/v1/x/../events",
        "/api/v1/%2e/events",
        "/API/V1/EVENTS",
        "/api/v1/events/",
    ] {
        assert!(sample.iter().any(|s| s == must), "no spelling {must}");
    }

    let mut cases = Vec::new();
    for row in PERMISSIONS {
        // Logging out would end the sessions the walk goes on with.
        let logout = row.path == "/api/v1/auth/logout";
        for spelling in spellings(row.path) {
            let whos: Vec<Who> = if spelling.must_route && spelling.template == row.path {
                vec![
                    Who::Nobody,
                    Who::Forged,
                    Who::Role("agent", &agent),
                    Who::Role("admin", &admin),
                    Who::Role("auditor", &auditor),
                ]
            } else {
                vec![
                    Who::Nobody,
                    Who::Role("agent", &agent),
                    Who::Role("admin", &admin),
                    Who::Role("auditor", &auditor),
                ]
            };
            for who in whos {
                if logout && matches!(who, Who::Role(..)) {
                    continue;
                }
                cases.push((row, spelling.clone(), who));
            }
        }
    }
    assert!(cases.len() > 5_000, "only {} cases", cases.len());

    let answers: Vec<_> = futures::stream::iter(cases)
        .map(|(row, spelling, who)| {
            let addr = addr.clone();
            async move {
                let target = concrete(&spelling.template);
                let token = match who {
                    Who::Nobody => None,
                    Who::Forged => Some("ldt_forged"),
                    Who::Role(_, token) => Some(token),
                };
                let status = match row.auth {
                    Auth::Bearer => raw::status(&addr, row.method, &target, token).await,
                    Auth::Cookie => raw::console_status(&addr, row.method, &target, token).await,
                };
                (row, spelling, who, target, status)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;

    let mut wrong = Vec::new();
    for (row, spelling, who, target, status) in &answers {
        let who_name = match who {
            Who::Nobody => "no token",
            Who::Forged => "a forged token",
            Who::Role(role, _) => role,
        };
        let ok = match expected(row, *who) {
            // Refused: exactly the table's refusal where the spelling must
            // reach the route. Elsewhere the spelling may reach no route
            // (404, or 400 for a target the server will not parse) or
            // another one, which judges it by its own row (401, 403) or
            // does not take the method (405): a refusal either way.
            Some(refusal) if spelling.must_route => *status == refusal,
            Some(_) => [303, 400, 401, 403, 404, 405].contains(status),
            // Allowed: never refused (a console page never sends its
            // reader to sign in), never a server error.
            None => {
                let refused = [401, 403].contains(status)
                    || (row.auth == Auth::Cookie
                        && matches!(who, Who::Role(..))
                        && *status == 303
                        && spelling.must_route
                        && row.path != "/"
                        && row.path != "/console/");
                !refused && *status < 500
            }
        };
        if !ok || *status >= 500 {
            wrong.push(format!(
                "{} {target} ({}) as {who_name}: {status}, table says {:?}",
                row.method, row.path, row.access
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} answers break the table:\n{}",
        wrong.len(),
        answers.len(),
        wrong
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

async fn other_methods_get_405_with_allow(db: &TestDb) {
    let app = spawn_app(db).await;
    let mut paths: Vec<&str> = PERMISSIONS.iter().map(|p| p.path).collect();
    paths.dedup();
    for path in paths {
        let mounted: Vec<&str> = PERMISSIONS
            .iter()
            .filter(|p| p.path == path)
            .map(|p| p.method)
            .collect();
        for method in METHODS.iter().filter(|m| !mounted.contains(m)) {
            let res = app
                .send(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    &concrete(path),
                    Some(&app.admin),
                    None,
                )
                .await;
            let allow = res
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_string());
            problem(res, 405).await;
            let mut allow: Vec<String> = allow
                .unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"))
                .split(',')
                .map(|m| m.trim().to_string())
                .collect();
            allow.sort();
            let mut want: Vec<String> = mounted.iter().map(|m| m.to_string()).collect();
            want.sort();
            assert_eq!(allow, want, "{method} {path}");
        }
    }
}

async fn every_answer_carries_the_security_headers(db: &TestDb) {
    let app = spawn_app(db).await;
    let answers = [
        app.send(reqwest::Method::GET, "/healthz", None, None).await,
        app.get("/api/v1/me", &app.admin).await,
        app.send(reqwest::Method::GET, "/api/v1/me", None, None)
            .await,
        app.send(reqwest::Method::GET, "/no/such/route", None, None)
            .await,
        app.send(reqwest::Method::DELETE, "/api/v1/me", None, None)
            .await,
        app.post("/api/v1/tickets", &app.admin, serde_json::json!({}))
            .await,
    ];
    for res in answers {
        let what = format!("{} {}", res.status(), res.url().path());
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
        assert_eq!(h["x-frame-options"], "DENY", "{what}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    }
}

/// A command with an `Idempotency-Key` that announces a body larger than
/// the route reads is refused at once, before the server waits for (and
/// holds) the bytes; one within the limit is read as usual.
async fn an_idempotent_request_is_held_to_the_route_limit(db: &TestDb) {
    let app = spawn_app(db).await;
    let ticket = app.ticket(&app.admin).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // The test server reads at most 16 KiB of JSON (and 4 KiB files).
    let promised = 60_000;
    let request = format!(
        "POST /api/v1/tickets/{ticket}/messages HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {}\r\nIdempotency-Key: big-1\r\n\
         Content-Type: application/json\r\nContent-Length: {promised}\r\n\r\n{{\"body\": \"",
        app.admin
    );
    let head = raw::head(
        &addr,
        request.as_bytes(),
        std::time::Duration::from_secs(10),
    )
    .await
    .expect("no answer: the server waited for a body larger than the route reads");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");

    // An upload is held to the file limit, not the JSON one.
    let boundary = "XyZ";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n{}\r\n--{boundary}--\r\n",
        "x".repeat(3000)
    );
    let res = app
        .client
        .post(app.url(&format!("/api/v1/tickets/{ticket}/files")))
        .bearer_auth(&app.admin)
        .header("Idempotency-Key", "file-1")
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
}

async fn log_positions_beyond_int64_are_refused_by_name(db: &TestDb) {
    let app = spawn_app(db).await;
    let ticket = app.ticket(&app.admin).await;
    let head = app.head().await;
    let too_big = "9223372036854775808";
    for (path, field) in [
        (
            format!("/api/v1/tickets?min_position={too_big}"),
            "min_position",
        ),
        (
            format!("/api/v1/audit?min_position={too_big}"),
            "min_position",
        ),
        (format!("/api/v1/events?after={too_big}"), "after"),
        (
            format!("/api/v1/audit/checkpoints?after={too_big}"),
            "after",
        ),
        (
            format!("/api/v1/tickets/{ticket}?at_position={too_big}"),
            "at_position",
        ),
        (
            format!("/api/v1/tickets/{ticket}/history?at_position={too_big}"),
            "at_position",
        ),
    ] {
        let body = problem(app.get(&path, &app.admin).await, 400).await;
        assert_eq!(body["field"], field, "{path}: {body}");
    }
    // The largest one the document allows is read as a position.
    let res = app
        .get(
            &format!("/api/v1/tickets/{ticket}?at_position=9223372036854775807"),
            &app.admin,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(app.head().await, head, "refusals write nothing");
}

/// Free text past the limit is the caller's mistake, named; never the
/// database's (SQLite refuses a LIKE pattern over 50,000 bytes with an
/// error that used to become a 500).
async fn searched_text_is_held_to_its_limit(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, auditor) = app.user("auditor").await;
    for text in ["a".repeat(201), "a".repeat(49_999)] {
        for path in ["/api/v1/tickets", "/api/v1/audit"] {
            let res = app.get(&format!("{path}?q={text}"), &auditor).await;
            let body = problem(res, 400).await;
            assert_eq!(body["field"], "q", "{path}: {body}");
        }
    }
    let res = app
        .get(&format!("/api/v1/tickets?q={}", "a".repeat(200)), &auditor)
        .await;
    assert_eq!(res.status(), 200);
}
