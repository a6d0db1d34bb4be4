//! The HTTP API, black-box: the real server on port 0 against a fresh
//! database (SQLite always, PostgreSQL when LEDGERDESK_TEST_POSTGRES_URL is
//! set), started by `ledgerdesk_tests::app`.

use std::time::Duration;

use ledgerdesk_api::permissions::{Access, Auth, PERMISSIONS};
use ledgerdesk_tests::app::*;
use ledgerdesk_tests::{backend_tests, TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

backend_tests!(
    ticket_list_and_reports_come_from_projections,
    logging_in_and_out_is_recorded,
    failed_logins_are_slowed_down_without_revealing_accounts,
    a_ticket_lives_its_whole_life_over_http,
    every_endpoint_refuses_without_token_and_wrong_role,
    stale_if_match_gets_412_and_writes_nothing,
    idempotency_key_replays_the_first_response,
    each_error_is_a_problem_and_writes_nothing,
    request_id_becomes_the_correlation_id,
    files_are_stored_by_hash_and_limited,
    erasure_destroys_files_only_the_subject_held,
    refused_uploads_leave_no_file_behind,
    users_departments_settings_and_activity,
    operations_endpoints_answer,
    parallel_wrong_passwords_are_counted_before_they_are_checked,
    the_right_password_does_not_pass_once_attempts_reach_the_limit,
    a_saturated_verifier_answers_503_and_counts_no_failure,
    throttled_logins_add_a_bounded_number_of_events,
    answers_with_a_token_are_not_cached,
    control_characters_are_refused_in_every_text_field,
    a_failed_projection_degrades_readiness_and_the_others_carry_on,
);

async fn logging_in_and_out_is_recorded(db: &TestDb) {
    let app = spawn_app(db).await;
    let me = ok_json(app.get("/api/v1/me", &app.admin).await).await;
    assert_eq!(me["email"], ADMIN_EMAIL);
    assert_eq!(me["role"], "admin");
    assert_eq!(me["logged_in"], true);
    let admin_id = me["id"].as_str().unwrap().to_string();
    let stream = format!("user-{admin_id}");
    let types: Vec<String> = app
        .stream(&stream)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, ["user.created", "user.logged_in"]);

    // Wrong password: 401 and `user.login_failed`.
    let res = app
        .send(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": "nope-nope"})),
        )
        .await;
    let wrong = problem(res, 401).await;
    let last = app.stream(&stream).await.pop().unwrap();
    assert_eq!(last.event_type, "user.login_failed");
    assert!(last.payload.contains("wrong_password"));

    // Unknown email: the same answer, recorded on the system account.
    let res = app
        .send(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "ghost@desk.example", "password": "nope-nope"})),
        )
        .await;
    let unknown = problem(res, 401).await;
    assert_eq!(wrong, unknown);
    let last = app.events().await.pop().unwrap();
    assert_eq!(last.event_type, "user.general_action");
    assert!(last.payload.contains("login_failed"));
    assert!(!last.payload.contains("ghost"), "no email in the log");

    // Logout revokes the token and records it.
    let token = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let out = ok_json(app.post("/api/v1/auth/logout", &token, json!({})).await).await;
    assert!(out["position"].as_u64().unwrap() > 0);
    assert_eq!(
        app.stream(&stream).await.pop().unwrap().event_type,
        "user.logged_out"
    );
    problem(app.get("/api/v1/me", &token).await, 401).await;
    // The other session still works.
    ok_json(app.get("/api/v1/me", &app.admin).await).await;
}

async fn failed_logins_are_slowed_down_without_revealing_accounts(db: &TestDb) {
    let app = spawn_app(db).await;
    let attempt = |email: &'static str| {
        app.send(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": "wrong-wrong"})),
        )
    };
    for _ in 0..MAX_FAILED {
        problem(attempt(ADMIN_EMAIL).await, 401).await;
    }
    // Locked out now, also with the right password; the address is too.
    let res = attempt(ADMIN_EMAIL).await;
    assert!(
        res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let known = problem(res, 429).await;
    let res = app
        .send(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        )
        .await;
    problem(res, 429).await;
    let res = attempt("nobody@desk.example").await;
    let unknown = problem(res, 429).await;
    assert_eq!(known, unknown, "the same answer for unknown emails");
    let events = app.events().await;
    let refusals = events
        .iter()
        .filter(|e| e.payload.contains("too_many_attempts"))
        .count();
    // The start of the throttle is recorded once for the account and once
    // for the address, not once per refusal.
    assert_eq!(refusals, 2, "a throttle is recorded when it starts");
}

/// A login attempt for `email`: its status.
async fn attempt(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.send(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
}

async fn parallel_wrong_passwords_are_counted_before_they_are_checked(db: &TestDb) {
    let app = spawn_app(db).await;
    let statuses = futures::future::join_all((0..40).map(|i| {
        attempt(
            &app,
            ADMIN_EMAIL,
            if i % 2 == 0 { "wrong-1" } else { "wrong-2" },
        )
    }))
    .await
    .into_iter()
    .map(|r| r.status().as_u16())
    .collect::<Vec<_>>();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        checked as u32 <= MAX_FAILED,
        "{checked} checked: {statuses:?}"
    );
    assert_eq!(checked + refused, 40, "{statuses:?}");
}

async fn the_right_password_does_not_pass_once_attempts_reach_the_limit(db: &TestDb) {
    let app = spawn_app_with(
        db,
        &[
            ("LEDGERDESK__AUTH__MAX_CONCURRENT_VERIFICATIONS", "1"),
            ("LEDGERDESK__AUTH__VERIFICATION_WAIT_MS", "60000"),
        ],
    )
    .await;
    // Hold the one verifier: the first attempts take their slots and wait.
    let held = app.verifier.permits().acquire_owned().await.unwrap();
    let waiting = (0..MAX_FAILED)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/api/v1/auth/login"));
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({"email": ADMIN_EMAIL, "password": "wrong-wrong"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect::<Vec<_>>();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app.verifier.waiting() < MAX_FAILED as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "the attempts never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The rest of 30 attempts, the right password last: none is checked
    // while the first ones are pending, not even the right one.
    for _ in MAX_FAILED..29 {
        problem(attempt(&app, ADMIN_EMAIL, "wrong-wrong").await, 429).await;
    }
    problem(attempt(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await, 429).await;
    drop(held);
    for task in waiting {
        assert_eq!(task.await.unwrap(), 401);
    }
    // Now the failures themselves hold the limit.
    problem(attempt(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await, 429).await;
}

async fn a_saturated_verifier_answers_503_and_counts_no_failure(db: &TestDb) {
    let app = spawn_app_with(
        db,
        &[
            ("LEDGERDESK__AUTH__MAX_CONCURRENT_VERIFICATIONS", "1"),
            ("LEDGERDESK__AUTH__VERIFICATION_WAIT_MS", "50"),
        ],
    )
    .await;
    let held = app.verifier.permits().acquire_owned().await.unwrap();
    for _ in 0..=MAX_FAILED {
        let res = attempt(&app, ADMIN_EMAIL, "wrong-wrong").await;
        let retry = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>();
        assert!(retry.unwrap() >= 1);
        let busy = problem(res, 503).await;
        assert_eq!(busy["code"], "verifier_busy");
    }
    drop(held);
    // Unchecked attempts are no failures: the right password still passes.
    app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
}

async fn throttled_logins_add_a_bounded_number_of_events(db: &TestDb) {
    let app = spawn_app(db).await;
    for _ in 0..MAX_FAILED {
        problem(attempt(&app, ADMIN_EMAIL, "wrong-wrong").await, 401).await;
    }
    let before = app.events().await.len();
    let app = &app;
    for round in 0..20 {
        let statuses = futures::future::join_all((0..10).map(|i| {
            let email = if i % 2 == 0 {
                ADMIN_EMAIL.to_string()
            } else {
                format!("ghost{round}-{i}@desk.example")
            };
            async move { attempt(app, &email, "wrong-wrong").await.status().as_u16() }
        }))
        .await;
        assert!(statuses.iter().all(|s| *s == 429), "{statuses:?}");
    }
    let added = app.events().await.split_off(before);
    // The account's throttle and the address's, each once in the window.
    assert!(
        added.len() <= 2,
        "200 refusals added {} events",
        added.len()
    );
    assert!(added
        .iter()
        .all(|e| e.payload.contains("too_many_attempts")));
}

async fn answers_with_a_token_are_not_cached(db: &TestDb) {
    let app = spawn_app(db).await;
    let res = attempt(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["pragma"], "no-cache");
    let res = app.get("/api/v1/me", &app.admin).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
}

async fn a_ticket_lives_its_whole_life_over_http(db: &TestDb) {
    let app = spawn_app(db).await;
    let (agent_id, agent) = app.user("agent").await;
    let dept = ok_json(
        app.post(
            "/api/v1/departments",
            &app.admin,
            json!({"name": "Billing"}),
        )
        .await,
    )
    .await;
    let dept_id = dept["id"].as_str().unwrap().to_string();

    let res = app
        .post(
            "/api/v1/tickets",
            &agent,
            json!({"subject": "Invoice wrong", "body": "Charged twice.", "channel": "email",
                   "requester": {"email": "dan@customer.example", "name": "Dan"},
                   "priority": "high", "department_id": dept_id, "tags": ["billing"]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(res.headers()["etag"], "\"1\"");
    let created = ok_json(res).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/v1/tickets/{id}"));
    assert_eq!(created["version"], 1);
    assert!(created["position"].as_u64().unwrap() > 0);

    let t = |action: &str| format!("/api/v1/tickets/{id}/{action}");
    let mut version = 1;
    let mut step = |res_body: Value| {
        version += 1;
        assert_eq!(res_body["version"], version, "{res_body}");
        res_body
    };
    let msg = step(
        ok_json(
            app.post(&t("messages"), &agent, json!({"body": "We are on it."}))
                .await,
        )
        .await,
    );
    let message_id = msg["item"].as_str().unwrap().to_string();
    step(
        ok_json(
            app.post(
                &t("messages"),
                &agent,
                json!({"body": "Check the ledger", "internal": true}),
            )
            .await,
        )
        .await,
    );
    step(
        ok_json(
            app.post(
                &t("messages"),
                &agent,
                json!({"body": "Thanks!", "direction": "inbound", "channel": "email"}),
            )
            .await,
        )
        .await,
    );
    step(
        ok_json(
            app.post(&t("notes"), &agent, json!({"body": "VIP customer"}))
                .await,
        )
        .await,
    );
    step(
        ok_json(
            app.post(&t("status"), &agent, json!({"status": "open"}))
                .await,
        )
        .await,
    );
    step(
        ok_json(
            app.post(&t("priority"), &agent, json!({"priority": "urgent"}))
                .await,
        )
        .await,
    );
    step(
        ok_json(
            app.post(&t("transfer"), &agent, json!({"to_agent": agent_id}))
                .await,
        )
        .await,
    );
    step(
        ok_json(
            app.post(
                &t("tags"),
                &agent,
                json!({"add": ["refund"], "remove": ["billing"]}),
            )
            .await,
        )
        .await,
    );
    step(
        ok_json(
            app.post(&t("forward"), &agent, json!({"to": "finance@desk.example"}))
                .await,
        )
        .await,
    );
    step(
        ok_json(
            app.post(
                &t("calls"),
                &agent,
                json!({"direction": "outbound", "duration_seconds": 120}),
            )
            .await,
        )
        .await,
    );
    step(
        ok_json(
            app.post(
                &t("voice-messages"),
                &agent,
                json!({"duration_seconds": 30}),
            )
            .await,
        )
        .await,
    );
    step(
        ok_json(
            app.post(&t("chat"), &agent, json!({"body": "chat transcript"}))
                .await,
        )
        .await,
    );
    step(
        ok_json(
            app.post(
                &t("system-messages"),
                &app.admin,
                json!({"text": "SLA breached"}),
            )
            .await,
        )
        .await,
    );
    step(
        ok_json(
            app.post(
                &t("ranking"),
                &agent,
                json!({"rating": 5, "comment": "great"}),
            )
            .await,
        )
        .await,
    );

    // Viewing is on the agent's own stream.
    let viewing = ok_json(app.post(&t("views"), &agent, json!({})).await).await;
    assert_eq!(viewing["id"], agent_id.to_string());
    let me = ok_json(app.get("/api/v1/me", &agent).await).await;
    assert_eq!(me["viewing"], json!([id]));
    ok_json(
        app.send(Method::DELETE, &t("views"), Some(&agent), None)
            .await,
    )
    .await;

    let res = app.get(&location, &agent).await;
    assert_eq!(res.headers()["etag"], format!("\"{version}\"").as_str());
    let ticket = ok_json(res).await;
    assert_eq!(ticket["status"], "open");
    assert_eq!(ticket["priority"], "urgent");
    assert_eq!(ticket["assignee"]["id"], agent_id.to_string());
    assert_eq!(ticket["tags"], json!(["refund"]));
    assert_eq!(ticket["rating"], 5);

    // Split a message into a new ticket, then merge that ticket back.
    let split = ok_json(
        app.post(
            &t("split"),
            &agent,
            json!({"message_ids": [message_id], "subject": "Refund", "body": "Split off"}),
        )
        .await,
    )
    .await;
    let new_id = split["target"]["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, id);
    let merged = ok_json(
        app.post(
            &format!("/api/v1/tickets/{new_id}/merge"),
            &agent,
            json!({"into": id}),
        )
        .await,
    )
    .await;
    assert_eq!(merged["target"]["id"], id);
    let gone = ok_json(app.get(&format!("/api/v1/tickets/{new_id}"), &agent).await).await;
    assert_eq!(gone["merged_into"], id);

    // Resolve, close: a closed ticket refuses messages with 422.
    ok_json(
        app.post(&t("status"), &agent, json!({"status": "resolved"}))
            .await,
    )
    .await;
    ok_json(
        app.post(&t("status"), &agent, json!({"status": "closed"}))
            .await,
    )
    .await;
    let refused = problem(
        app.post(&t("messages"), &agent, json!({"body": "late"}))
            .await,
        422,
    )
    .await;
    assert_eq!(refused["code"], "ticket_closed");
    assert_eq!(
        refused["type"],
        "https://ledgerdesk.dev/problems/ticket-closed"
    );

    // Every ticket event carries the agent, its address and user agent.
    for e in app.stream(&format!("ticket-{id}")).await {
        let m = e.metadata().unwrap();
        assert!(m.ip.as_deref() == Some("127.0.0.1"), "{}", e.event_type);
        assert!(m.correlation_id.is_some());
        if e.event_type != "ticket.system_message_added" {
            assert!(m.actor_id.is_some());
        }
    }
    // An auditor reads, but cannot write.
    let (_, auditor) = app.user("auditor").await;
    ok_json(app.get(&location, &auditor).await).await;
    problem(
        app.post(&t("notes"), &auditor, json!({"body": "x"})).await,
        403,
    )
    .await;
}

fn concrete(path: &str) -> String {
    path.replace("{id}", &Uuid::now_v7().to_string())
        .replace("{sha256}", &"0".repeat(64))
        .replace("{key}", "some.key")
        .replace("{position}", "1")
}

async fn every_endpoint_refuses_without_token_and_wrong_role(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let (_, auditor) = app.user("auditor").await;
    let tokens = [
        ("agent", &agent),
        ("admin", &app.admin),
        ("auditor", &auditor),
    ];
    // Console rows take a cookie, not a token: tests/console.rs and
    // tests/gate.rs walk them.
    for p in PERMISSIONS.iter().filter(|p| p.auth == Auth::Bearer) {
        let method = Method::from_bytes(p.method.as_bytes()).unwrap();
        let path = concrete(p.path);
        match p.access {
            Access::Public => {
                let res = app.send(method.clone(), &path, None, None).await;
                assert_ne!(
                    res.status(),
                    StatusCode::UNAUTHORIZED,
                    "{} {}",
                    p.method,
                    p.path
                );
            }
            Access::Roles(roles) => {
                let res = app.send(method.clone(), &path, None, Some(json!({}))).await;
                assert_eq!(res.status(), 401, "{} {} without a token", p.method, p.path);
                assert!(res.headers().contains_key("www-authenticate"));
                let res = app
                    .send(method.clone(), &path, Some("ldt_forged"), Some(json!({})))
                    .await;
                assert_eq!(
                    res.status(),
                    401,
                    "{} {} with a forged token",
                    p.method,
                    p.path
                );
                for (role, token) in tokens {
                    let allowed = roles.iter().any(|r| r.as_str() == role);
                    if allowed && p.path == "/api/v1/auth/logout" {
                        continue; // would end the session the walk goes on with
                    }
                    let res = app
                        .send(method.clone(), &path, Some(token), Some(json!({})))
                        .await;
                    let status = res.status();
                    if allowed {
                        assert!(
                            status != 401 && status != 403,
                            "{} {} as {role}: {status}",
                            p.method,
                            p.path
                        );
                        assert!(
                            status.as_u16() < 500,
                            "{} {} as {role}: {status}",
                            p.method,
                            p.path
                        );
                    } else {
                        assert_eq!(status, 403, "{} {} as {role}", p.method, p.path);
                    }
                }
            }
        }
    }
}

async fn stale_if_match_gets_412_and_writes_nothing(db: &TestDb) {
    let app = spawn_app(db).await;
    let id = app.ticket(&app.admin).await;
    let path = format!("/api/v1/tickets/{id}/notes");
    let head = app.head().await;
    let res = app
        .client
        .post(app.url(&path))
        .bearer_auth(&app.admin)
        .header("If-Match", "\"7\"")
        .json(&json!({"body": "stale"}))
        .send()
        .await
        .unwrap();
    problem(res, 412).await;
    assert_eq!(app.head().await, head);
    let res = app
        .client
        .post(app.url(&path))
        .bearer_auth(&app.admin)
        .header("If-Match", "\"1\"")
        .json(&json!({"body": "fresh"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["etag"], "\"2\"");
    let res = app
        .client
        .post(app.url(&path))
        .bearer_auth(&app.admin)
        .header("If-Match", "not-a-version")
        .json(&json!({"body": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res, 400).await["field"], "If-Match");
}

async fn idempotency_key_replays_the_first_response(db: &TestDb) {
    let app = spawn_app(db).await;
    let id = app.ticket(&app.admin).await;
    let path = format!("/api/v1/tickets/{id}/messages");
    let send = |key: &'static str, body: &'static str| {
        app.client
            .post(app.url(&path))
            .bearer_auth(&app.admin)
            .header("Idempotency-Key", key)
            .json(&json!({"body": body}))
            .send()
    };
    let first = send("k-1", "hello").await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].clone();
    let first: Value = first.json().await.unwrap();
    let head = app.head().await;
    let again = send("k-1", "hello").await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["etag"], etag);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(app.head().await, head, "nothing new written");
    // Another request under the same key is refused.
    let other = send("k-1", "different").await.unwrap();
    assert_eq!(problem(other, 422).await["code"], "idempotency_key_reused");
    // The same key for another user is theirs.
    let (_, agent) = app.user("agent").await;
    let res = app
        .client
        .post(app.url(&path))
        .bearer_auth(&agent)
        .header("Idempotency-Key", "k-1")
        .json(&json!({"body": "hello"}))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("idempotent-replayed").is_none());
    assert_eq!(ok_json(res).await["version"], 3);
    // A refused command keeps nothing: fixed and resent, it runs.
    let bad = app
        .client
        .post(app.url(&format!("/api/v1/tickets/{id}/status")))
        .bearer_auth(&app.admin)
        .header("Idempotency-Key", "k-2")
        .json(&json!({"status": "sideways"}))
        .send()
        .await
        .unwrap();
    problem(bad, 422).await;
}

async fn each_error_is_a_problem_and_writes_nothing(db: &TestDb) {
    let app = spawn_app(db).await;
    let id = app.ticket(&app.admin).await;
    let notes = app.url(&format!("/api/v1/tickets/{id}/notes"));
    let head = app.head().await;
    let raw = |body: &'static str, ct: &'static str| {
        app.client
            .post(notes.clone())
            .bearer_auth(&app.admin)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    // 400: malformed JSON, a wrong type, a missing field, an unknown field.
    assert_eq!(
        problem(raw("{\"body\": ", "application/json").await.unwrap(), 400).await["code"],
        "malformed_json"
    );
    assert_eq!(
        problem(raw("{\"body\": 3}", "application/json").await.unwrap(), 400).await["field"],
        "body"
    );
    assert_eq!(
        problem(raw("{}", "application/json").await.unwrap(), 400).await["field"],
        "body"
    );
    assert_eq!(
        problem(
            raw("{\"body\": \"x\", \"bogus\": 1}", "application/json")
                .await
                .unwrap(),
            400
        )
        .await["field"],
        "bogus"
    );
    let res = app.get("/api/v1/tickets/not-a-uuid", &app.admin).await;
    assert_eq!(problem(res, 400).await["field"], "id");
    let res = app.get("/api/v1/users?limit=abc", &app.admin).await;
    problem(res, 400).await;
    // 415: not JSON.
    problem(
        raw("body=x", "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        415,
    )
    .await;
    // 413: too big.
    let big = json!({"body": "x".repeat(20_000)});
    problem(
        app.post(&format!("/api/v1/tickets/{id}/notes"), &app.admin, big)
            .await,
        413,
    )
    .await;
    // 404: unknown ticket, unknown route, unknown user.
    let missing = Uuid::now_v7();
    let res = app
        .post(
            &format!("/api/v1/tickets/{missing}/notes"),
            &app.admin,
            json!({"body": "x"}),
        )
        .await;
    assert_eq!(problem(res, 404).await["code"], "ticket_not_found");
    problem(app.get("/api/v1/nowhere", &app.admin).await, 404).await;
    problem(
        app.get(&format!("/api/v1/users/{missing}"), &app.admin)
            .await,
        404,
    )
    .await;
    // 405 on a known route.
    problem(
        app.send(Method::DELETE, "/api/v1/me", Some(&app.admin), None)
            .await,
        405,
    )
    .await;
    // 422: a domain rule, naming the field.
    let res = app
        .post(
            &format!("/api/v1/tickets/{id}/status"),
            &app.admin,
            json!({"status": "sideways"}),
        )
        .await;
    let p = problem(res, 422).await;
    assert_eq!(p["field"], "status");
    let res = app
        .post(
            &format!("/api/v1/tickets/{id}/ranking"),
            &app.admin,
            json!({"rating": 9}),
        )
        .await;
    assert_eq!(problem(res, 422).await["code"], "rating_out_of_range");
    // 401 and 403.
    problem(app.send(Method::GET, "/api/v1/me", None, None).await, 401).await;
    let (_, agent) = app.user("agent").await;
    let head_after_user = app.head().await;
    problem(
        app.post("/api/v1/departments", &agent, json!({"name": "x"}))
            .await,
        403,
    )
    .await;
    assert_eq!(app.head().await, head_after_user);
    // 409: an email already taken.
    let body = json!({"name": "Dup", "email": ADMIN_EMAIL.to_uppercase(), "role": "agent", "password": "password-123"});
    assert_eq!(
        problem(app.post("/api/v1/users", &app.admin, body).await, 409).await["code"],
        "email_taken"
    );
    // 422 on user creation leaves no row behind: the email stays free.
    let bad = json!({"name": "Bad", "email": "eve@desk.example", "role": "overlord", "password": "password-123"});
    assert_eq!(
        problem(app.post("/api/v1/users", &app.admin, bad).await, 422).await["field"],
        "role"
    );
    let good = json!({"name": "Eve", "email": "eve@desk.example", "role": "agent", "password": "password-123"});
    assert_eq!(
        app.post("/api/v1/users", &app.admin, good).await.status(),
        201
    );
    // Nothing of the failures reached the log (only the two users).
    let written: Vec<String> = app
        .store
        .read_all(head, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(written, ["user.created", "user.logged_in", "user.created"]);
}

async fn request_id_becomes_the_correlation_id(db: &TestDb) {
    let app = spawn_app(db).await;
    let res = app
        .client
        .post(app.url("/api/v1/tickets"))
        .bearer_auth(&app.admin)
        .header("X-Request-Id", "req-test-0001")
        .header("User-Agent", "api-tests/1.0")
        .json(
            &json!({"subject": "s", "body": "b", "channel": "chat", "requester": {"name": "Zed"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-test-0001");
    let id = ok_json(res).await["id"].as_str().unwrap().to_string();
    let events = app.stream(&format!("ticket-{id}")).await;
    let meta = events[0].metadata().unwrap();
    assert_eq!(meta.correlation_id.as_deref(), Some("req-test-0001"));
    assert_eq!(meta.user_agent.as_deref(), Some("api-tests/1.0"));
    assert_eq!(meta.ip.as_deref(), Some("127.0.0.1"));
    // Without one, an id is generated and returned.
    let res = app.get("/healthz", &app.admin).await;
    assert!(!res.headers()["x-request-id"].is_empty());
}

fn multipart(name: &str, content_type: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----ledgerdesk-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn files_are_stored_by_hash_and_limited(db: &TestDb) {
    let app = spawn_app(db).await;
    let id = app.ticket(&app.admin).await;
    let url = app.url(&format!("/api/v1/tickets/{id}/files"));
    let (ct, body) = multipart("notes.txt", "text/plain", b"hello file");
    let res = app
        .client
        .post(url.clone())
        .bearer_auth(&app.admin)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let attached = ok_json(res).await;
    assert_eq!(attached["version"], 2);
    let last = app.stream(&format!("ticket-{id}")).await.pop().unwrap();
    assert_eq!(last.event_type, "ticket.file_attached");
    let sha = "f3877e8a3d98f809d9f844060fbea2864a4b66980a22ff22297014d0c168db2e";
    assert!(last.payload.contains(sha), "{}", last.payload);
    let res = app.get(&format!("/api/v1/files/{sha}"), &app.admin).await;
    assert_eq!(res.headers()["content-type"], "text/plain");
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"hello file");
    // Over files.max_bytes: 413 and nothing written.
    let head = app.head().await;
    let (ct, body) = multipart("big.bin", "application/octet-stream", &vec![7u8; 5000]);
    let res = app
        .client
        .post(url.clone())
        .bearer_auth(&app.admin)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    problem(res, 413).await;
    // Not multipart: 415.
    let res = app
        .client
        .post(url)
        .bearer_auth(&app.admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    problem(res, 415).await;
    assert_eq!(app.head().await, head);
    problem(
        app.get(&format!("/api/v1/files/{}", "f".repeat(64)), &app.admin)
            .await,
        404,
    )
    .await;
    problem(app.get("/api/v1/files/nothex", &app.admin).await, 400).await;
}

/// Upload `bytes` to ticket `id` as `name`, with an optional `If-Match`.
async fn upload(
    app: &TestApp,
    id: &str,
    name: &str,
    bytes: &[u8],
    if_match: Option<&str>,
) -> reqwest::Response {
    let (ct, body) = multipart(name, "application/pdf", bytes);
    let mut req = app
        .client
        .post(app.url(&format!("/api/v1/tickets/{id}/files")))
        .bearer_auth(&app.admin)
        .header("content-type", ct)
        .body(body);
    if let Some(v) = if_match {
        req = req.header("If-Match", v);
    }
    req.send().await.unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Every regular file under the upload folder but the signing key.
fn files_on_disk(app: &TestApp) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("checkpoint.key"))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&app.dir, &mut out);
    out
}

async fn erasure_destroys_files_only_the_subject_held(db: &TestDb) {
    let app = spawn_app(db).await;
    let erin = ok_json(
        app.post(
            "/api/v1/tickets",
            &app.admin,
            json!({"subject": "Scan of my passport", "body": "Attached.", "channel": "email",
                   "requester": {"email": "erin@customer.example", "name": "Erin Example"}}),
        )
        .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let carol = app.ticket(&app.admin).await.to_string();
    let own: &[u8] = b"%PDF erin's passport";
    let shared: &[u8] = b"%PDF the terms both customers were sent";
    for (ticket, bytes) in [(&erin, own), (&erin, shared), (&carol, shared)] {
        ok_json(upload(&app, ticket, "scan.pdf", bytes, None).await).await;
    }
    let (own_sha, shared_sha) = (sha256_hex(own), sha256_hex(shared));
    let on_disk = |sha: &str| app.dir.join(&sha[..2]).join(sha).exists();
    assert!(on_disk(&own_sha) && on_disk(&shared_sha));
    let res = app
        .get(&format!("/api/v1/files/{own_sha}"), &app.admin)
        .await;
    assert_eq!(res.bytes().await.unwrap().as_ref(), own);

    ok_json(
        app.post(
            "/api/v1/admin/erasure",
            &app.admin,
            json!({"email": "erin@customer.example"}),
        )
        .await,
    )
    .await;
    // Hers alone: gone from disk, and the download says it was erased.
    assert!(
        !on_disk(&own_sha),
        "the erased subject's file is still on disk"
    );
    let gone = problem(
        app.get(&format!("/api/v1/files/{own_sha}"), &app.admin)
            .await,
        410,
    )
    .await;
    assert_eq!(gone["code"], "file_erased");
    // The same bytes on a held customer's ticket stay theirs.
    let res = app
        .get(&format!("/api/v1/files/{shared_sha}"), &app.admin)
        .await;
    assert_eq!(res.bytes().await.unwrap().as_ref(), shared);
    // New files for her ticket are not kept.
    let head = app.head().await;
    let refused = problem(upload(&app, &erin, "more.pdf", b"more", None).await, 422).await;
    assert_eq!(refused["code"], "subject_erased");
    assert_eq!(app.head().await, head);
    assert!(!on_disk(&sha256_hex(b"more")));
    // The log is untouched by all of it.
    let verify = ok_json(app.get("/api/v1/admin/verify", &app.admin).await).await;
    assert_eq!(verify["ok"], true, "{verify}");

    // Once the last holder is erased too, the shared file goes.
    ok_json(
        app.post(
            "/api/v1/admin/erasure",
            &app.admin,
            json!({"email": "carol@customer.example"}),
        )
        .await,
    )
    .await;
    assert!(!on_disk(&shared_sha));
    problem(
        app.get(&format!("/api/v1/files/{shared_sha}"), &app.admin)
            .await,
        410,
    )
    .await;
    let verify = ok_json(app.get("/api/v1/admin/verify", &app.admin).await).await;
    assert_eq!(verify["ok"], true, "{verify}");
}

async fn refused_uploads_leave_no_file_behind(db: &TestDb) {
    let app = spawn_app(db).await;
    let id = app.ticket(&app.admin).await.to_string();
    let head = app.head().await;
    // A stale If-Match: 412.
    problem(
        upload(&app, &id, "a.pdf", b"stale", Some("\"7\"")).await,
        412,
    )
    .await;
    // A name the domain refuses: 422.
    let long = "n".repeat(300);
    problem(upload(&app, &id, &long, b"refused", None).await, 422).await;
    // Over files.max_bytes: 413.
    problem(upload(&app, &id, "big.bin", &[7u8; 5000], None).await, 413).await;
    assert_eq!(app.head().await, head);
    assert_eq!(files_on_disk(&app), Vec::<std::path::PathBuf>::new());
    for bytes in [&b"stale"[..], b"refused"] {
        problem(
            app.get(&format!("/api/v1/files/{}", sha256_hex(bytes)), &app.admin)
                .await,
            404,
        )
        .await;
    }
    let count = "SELECT COUNT(*) AS v FROM api_files";
    let indexed = ledgerdesk_tests::ints(&app.store.db(), count, vec![]).await[0].unwrap();
    assert_eq!(indexed, 0, "a refused upload was indexed");
    // An accepted one is kept, and only it.
    ok_json(upload(&app, &id, "a.pdf", b"kept", None).await).await;
    assert_eq!(files_on_disk(&app).len(), 1);
}

/// On SQLite, a destroyed key must not linger in the database file's free
/// space or in its write-ahead log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_erasure_leaves_no_key_bytes_in_the_files() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    app.ticket(&app.admin).await;
    let pool = app.store.db();
    let of_carol = |column: &str| {
        format!(
            "SELECT k.{column} AS v FROM subject_keys k \
             JOIN data_subjects d ON d.subject_id = k.subject_id WHERE d.email = $1"
        )
    };
    let carol = || vec![ledgerdesk_store::db::Arg::from("carol@customer.example")];
    let subject = ledgerdesk_tests::texts(&pool, &of_carol("subject_id"), carol()).await[0]
        .clone()
        .unwrap();
    let key = ledgerdesk_tests::texts(&pool, &of_carol("key"), carol()).await[0]
        .clone()
        .unwrap();
    let path = db.url.trim_start_matches("sqlite://").to_string();
    let bytes = || {
        ["", "-wal"]
            .iter()
            .flat_map(|suffix| std::fs::read(format!("{path}{suffix}")).unwrap_or_default())
            .collect::<Vec<u8>>()
    };
    let holds = |haystack: &[u8], needle: &str| {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    };
    assert!(holds(&bytes(), &key), "the key is not where the test looks");
    ok_json(
        app.post(
            "/api/v1/admin/erasure",
            &app.admin,
            json!({ "subject": subject }),
        )
        .await,
    )
    .await;
    assert!(
        !holds(&bytes(), &key),
        "the destroyed key is still in the database files"
    );
}

async fn users_departments_settings_and_activity(db: &TestDb) {
    let app = spawn_app(db).await;
    let (agent_id, agent) = app.user("agent").await;
    let users = ok_json(app.get("/api/v1/users", &agent).await).await;
    let emails: Vec<&str> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails.len(), 2, "{emails:?}");
    assert!(emails.contains(&ADMIN_EMAIL));
    let dept = ok_json(
        app.post(
            "/api/v1/departments",
            &app.admin,
            json!({"name": "Support"}),
        )
        .await,
    )
    .await;
    let depts = ok_json(app.get("/api/v1/departments", &agent).await).await;
    assert_eq!(depts["items"][0]["name"], "Support");
    // An admin changes the agent; the list follows.
    let path = format!("/api/v1/users/{agent_id}");
    ok_json(
        app.send(
            Method::PATCH,
            &path,
            Some(&app.admin),
            Some(json!({"name": "Renamed", "department_id": dept["id"]})),
        )
        .await,
    )
    .await;
    let one = ok_json(app.get(&path, &agent).await).await;
    assert_eq!(one["name"], "Renamed");
    assert_eq!(one["department_id"], dept["id"]);
    // State: agents change their own only.
    let state = format!("/api/v1/users/{agent_id}/state");
    ok_json(
        app.send(
            Method::PUT,
            &state,
            Some(&agent),
            Some(json!({"state": "available"})),
        )
        .await,
    )
    .await;
    let admin_id = ok_json(app.get("/api/v1/me", &app.admin).await).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .send(
            Method::PUT,
            &format!("/api/v1/users/{admin_id}/state"),
            Some(&agent),
            Some(json!({"state": "away"})),
        )
        .await;
    problem(res, 403).await;
    // An admin cannot lock themselves out.
    let res = app
        .send(
            Method::PATCH,
            &format!("/api/v1/users/{admin_id}"),
            Some(&app.admin),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(problem(res, 422).await["code"], "cannot_change_self");
    // Settings and activity.
    let set = ok_json(
        app.send(
            Method::PUT,
            "/api/v1/settings/sla.hours",
            Some(&app.admin),
            Some(json!({"value": 8})),
        )
        .await,
    )
    .await;
    assert_eq!(set["version"], 1);
    let settings = ok_json(app.get("/api/v1/settings", &app.admin).await).await;
    assert_eq!(settings["values"]["sla.hours"], 8);
    let act = ok_json(
        app.post(
            "/api/v1/activity",
            &agent,
            json!({"action": "crm.synced", "description": "nightly sync"}),
        )
        .await,
    )
    .await;
    assert_eq!(act["id"], agent_id.to_string());
    // Password change and deactivation end the agent's sessions.
    ok_json(
        app.send(
            Method::PATCH,
            &path,
            Some(&app.admin),
            Some(json!({"active": false})),
        )
        .await,
    )
    .await;
    problem(app.get("/api/v1/me", &agent).await, 401).await;
    let res = app
        .send(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": one["email"], "password": "password-123"})),
        )
        .await;
    problem(res, 401).await;
}

async fn operations_endpoints_answer(db: &TestDb) {
    let app = spawn_app(db).await;
    let res = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(res.status(), 200);
    let doc: Value = app
        .send(Method::GET, "/openapi.json", None, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/tickets/{id}/merge"]["post"].is_object());
    app.ticket(&app.admin).await;
    let text = app
        .send(Method::GET, "/metrics", None, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("ledgerdesk_http_requests_total{method=\"POST\",route=\"/api/v1/tickets\",status=\"201\"} 1"), "{text}");
    assert!(text.contains("ledgerdesk_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/tickets\",le=\"+Inf\"} 1"));
    assert!(text.contains("ledgerdesk_events_appended_total"));
}

/// The ticket list is the tickets projection: a client that passes the
/// position its command returned reads its own write.
async fn ticket_list_and_reports_come_from_projections(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let (_, auditor) = app.user("auditor").await;
    let mut last = 0;
    for (subject, channel) in [
        ("Printer on fire", "email"),
        ("Refund", "chat"),
        ("Login fails", "email"),
    ] {
        let res = app
            .post(
                "/api/v1/tickets",
                &agent,
                json!({"subject": subject, "body": "Help.", "channel": channel,
                       "requester": {"email": "fay@customer.example", "name": "Fay"}, "tags": ["vip"]}),
            )
            .await;
        last = ok_json(res).await["position"].as_u64().unwrap();
    }
    let page = ok_json(
        app.get(
            &format!("/api/v1/tickets?min_position={last}&channel=email"),
            &agent,
        )
        .await,
    )
    .await;
    assert!(page["position"].as_u64().unwrap() >= last, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    assert!(items.iter().all(|t| t["channel"] == "email"));
    let res = app.get("/api/v1/tickets?limit=1&tag=vip", &auditor).await;
    let link = res.headers()["link"].to_str().unwrap().to_string();
    let page = ok_json(res).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next_cursor"].as_str().expect("a second page");
    assert_eq!(
        link,
        format!("</api/v1/tickets?limit=1&tag=vip&cursor={next}>; rel=\"next\"")
    );
    let second = ok_json(
        app.get(
            &format!("/api/v1/tickets?limit=1&tag=vip&cursor={next}"),
            &auditor,
        )
        .await,
    )
    .await;
    assert_ne!(second["items"][0]["id"], page["items"][0]["id"]);
    problem(app.get("/api/v1/tickets?cursor=garbage", &agent).await, 400).await;
    problem(app.get("/api/v1/tickets?limit=0", &agent).await, 400).await;
    problem(app.get("/api/v1/tickets?limit=501", &agent).await, 400).await;

    let status = ok_json(app.get("/api/v1/admin/projections", &auditor).await).await;
    let names: Vec<&str> = status["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "tickets",
            "conversation",
            "audit",
            "presence",
            "reports",
            "people"
        ],
        "{status}"
    );
    assert!(status["items"][0]["head"].as_u64().unwrap() >= last);
    let report = ok_json(app.get("/api/v1/reports/departments", &auditor).await).await;
    assert!(report["rows"].is_array());
    problem(app.get("/api/v1/reports/agents", &agent).await, 403).await;
    problem(
        app.get(
            "/api/v1/reports/agents?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            &auditor,
        )
        .await,
        400,
    )
    .await;
    let res = app
        .post(
            "/api/v1/admin/projections/tickets/rebuild",
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 202);
    problem(
        app.post(
            "/api/v1/admin/projections/nope/rebuild",
            &app.admin,
            json!({}),
        )
        .await,
        404,
    )
    .await;
}

/// The characters no text field takes, each as JSON would carry it.
const REFUSED: [&str; 5] = ["\\u0000", "\\u0001", "\\u001b", "\\u000b", "\\u007f"];

/// Every text field of the main commands, with each refused character:
/// 400 `control_character` naming the field, and nothing written.
async fn control_characters_are_refused_in_every_text_field(db: &TestDb) {
    let app = spawn_app(db).await;
    let t = app.ticket(&app.admin).await;
    let (user, _) = app.user("agent").await;
    let dept = ok_json(
        app.post(
            "/api/v1/departments",
            &app.admin,
            json!({"name": "Billing"}),
        )
        .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tp = |action: &str| format!("/api/v1/tickets/{t}/{action}");
    // (method, path, body with X where the bad text goes, the field named)
    let cases: Vec<(Method, String, &str, &str)> = vec![
        (
            Method::POST,
            "/api/v1/tickets".into(),
            r#"{"subject": "a X b", "body": "b", "channel": "email", "requester": {"name": "C"}}"#,
            "subject",
        ),
        (
            Method::POST,
            "/api/v1/tickets".into(),
            r#"{"subject": "s", "body": "a X", "channel": "email", "requester": {"name": "C"}}"#,
            "body",
        ),
        (
            Method::POST,
            "/api/v1/tickets".into(),
            r#"{"subject": "s", "body": "b", "channel": "email", "requester": {"name": "X"}}"#,
            "requester.name",
        ),
        (
            Method::POST,
            "/api/v1/tickets".into(),
            r#"{"subject": "s", "body": "b", "channel": "email", "requester": {"name": "C", "email": "cX@d.example"}}"#,
            "requester.email",
        ),
        (
            Method::POST,
            "/api/v1/tickets".into(),
            r#"{"subject": "s", "body": "b", "channel": "email", "requester": {"name": "C"}, "tags": ["ok", "vX"]}"#,
            "tags[1]",
        ),
        (
            Method::POST,
            "/api/v1/tickets".into(),
            r#"{"subject": "s", "body": "b", "channel": "emailX", "requester": {"name": "C"}}"#,
            "channel",
        ),
        (Method::POST, tp("messages"), r#"{"body": "X"}"#, "body"),
        (
            Method::POST,
            tp("messages"),
            r#"{"body": "ok", "internal": true, "channel": "X"}"#,
            "channel",
        ),
        (Method::POST, tp("notes"), r#"{"body": "nX"}"#, "body"),
        (
            Method::POST,
            tp("forward"),
            r#"{"to": "fX@d.example"}"#,
            "to",
        ),
        (
            Method::POST,
            tp("calls"),
            r#"{"direction": "X", "duration_seconds": 3}"#,
            "direction",
        ),
        (Method::POST, tp("chat"), r#"{"body": "X"}"#, "body"),
        (
            Method::POST,
            tp("system-messages"),
            r#"{"text": "X"}"#,
            "text",
        ),
        (
            Method::POST,
            tp("split"),
            r#"{"message_ids": [], "subject": "X", "body": "b"}"#,
            "subject",
        ),
        (Method::POST, tp("tags"), r#"{"add": ["X"]}"#, "add[0]"),
        (
            Method::POST,
            tp("tags"),
            r#"{"remove": ["X"]}"#,
            "remove[0]",
        ),
        (
            Method::POST,
            tp("status"),
            r#"{"status": "openX"}"#,
            "status",
        ),
        (
            Method::POST,
            tp("ranking"),
            r#"{"rating": 5, "comment": "X"}"#,
            "comment",
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            r#"{"name": "X", "email": "n@d.example", "role": "agent", "password": "long-enough-1"}"#,
            "name",
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            r#"{"name": "N", "email": "nX@d.example", "role": "agent", "password": "long-enough-1"}"#,
            "email",
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{user}"),
            r#"{"name": "X"}"#,
            "name",
        ),
        (
            Method::PUT,
            format!("/api/v1/users/{user}/state"),
            r#"{"state": "X"}"#,
            "state",
        ),
        (
            Method::POST,
            "/api/v1/departments".into(),
            r#"{"name": "X"}"#,
            "name",
        ),
        (
            Method::PATCH,
            format!("/api/v1/departments/{dept}"),
            r#"{"name": "X"}"#,
            "name",
        ),
        (
            Method::PUT,
            "/api/v1/settings/greeting".into(),
            r#"{"value": {"text": ["ok", "X"]}}"#,
            "value.text[1]",
        ),
        (
            Method::POST,
            "/api/v1/activity".into(),
            r#"{"action": "X", "description": "d"}"#,
            "action",
        ),
        (
            Method::POST,
            "/api/v1/admin/erasure".into(),
            r#"{"email": "eX@d.example"}"#,
            "email",
        ),
    ];
    let head = app.head().await;
    for bad in REFUSED {
        for (method, path, template, field) in &cases {
            let body: Value = serde_json::from_str(&template.replace('X', bad)).unwrap();
            let res = app
                .send(method.clone(), path, Some(&app.admin), Some(body))
                .await;
            let p = problem(res, 400).await;
            assert_eq!(p["code"], "control_character", "{method} {path} {bad}: {p}");
            assert_eq!(p["field"], *field, "{method} {path} {bad}");
        }
        // Without a token too: the login's email.
        let res = app
            .send(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(
                    serde_json::from_str(&format!(
                        r#"{{"email": "a{bad}@d.example", "password": "x"}}"#
                    ))
                    .unwrap(),
                ),
            )
            .await;
        assert_eq!(problem(res, 400).await["field"], "email", "{bad}");
        // A query parameter.
        let raw: String = serde_json::from_str(&format!("\"{bad}\"")).unwrap();
        let res = app
            .get(&format!("/api/v1/tickets?q={}", enc(&raw)), &app.admin)
            .await;
        assert_eq!(problem(res, 400).await["field"], "q", "{bad}");
        // An upload's file name, raw in the part's header: refused by the
        // form's parser or by the domain's field rule, never stored.
        let form = [
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a".as_slice(),
            raw.as_bytes(),
            b"b.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n",
        ]
        .concat();
        let res = app
            .client
            .post(app.url(&tp("files")))
            .bearer_auth(&app.admin)
            .header("Content-Type", "multipart/form-data; boundary=XyZ")
            .body(form)
            .send()
            .await
            .unwrap();
        let p = problem(res, 400).await;
        assert!(p["field"] == "file" || p["field"] == "name", "{bad}: {p}");
    }
    assert_eq!(app.head().await, head, "a refused request wrote nothing");
    // Tab, line feed and carriage return are text.
    let res = app
        .post(
            &tp("notes"),
            &app.admin,
            json!({"body": "one\ttwo\r\nthree\n"}),
        )
        .await;
    ok_json(res).await;
}

/// A projection that cannot apply an event says so: `failed` with the
/// position and the error in the admin status, readiness `degraded`, the
/// metrics; the other projections carry on; after the fix a rebuild
/// clears it.
async fn a_failed_projection_degrades_readiness_and_the_others_carry_on(db: &TestDb) {
    let app = spawn_app(db).await;
    let pool = app.store.db();
    // The workers first make sure their tables exist, which would quietly
    // recreate a table renamed meanwhile: break it once they run.
    for _ in 0..300 {
        let status = ok_json(app.get("/api/v1/admin/projections", &app.admin).await).await;
        if status["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "idle")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Break the reports projection's table the way a bad migration or a
    // hand edit would.
    ledgerdesk_tests::exec(
        &pool,
        "ALTER TABLE report_tickets RENAME TO report_tickets_away",
    )
    .await
    .unwrap();
    let res = app
        .post(
            "/api/v1/tickets",
            &app.admin,
            json!({"subject": "After the break", "body": "b", "channel": "email",
                   "requester": {"name": "C"}}),
        )
        .await;
    let created = ok_json(res).await;
    let position = created["position"].as_u64().unwrap();
    // The tickets projection still advances.
    let list = ok_json(
        app.get(
            &format!("/api/v1/tickets?min_position={position}"),
            &app.admin,
        )
        .await,
    )
    .await;
    assert!(list["position"].as_u64().unwrap() >= position, "{list}");
    assert_eq!(list["items"][0]["id"], created["id"]);

    let mut ready = Value::Null;
    for _ in 0..300 {
        let res = app.send(Method::GET, "/readyz", None, None).await;
        assert_eq!(
            res.status(),
            200,
            "one stuck read model keeps the server in"
        );
        ready = res.json().await.unwrap();
        if ready["status"] == "degraded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(
        ready["reasons"][0].as_str().unwrap().contains("reports"),
        "{ready}"
    );

    let status = ok_json(app.get("/api/v1/admin/projections", &app.admin).await).await;
    let items = status["items"].as_array().unwrap();
    let reports = items.iter().find(|s| s["name"] == "reports").unwrap();
    assert_eq!(reports["state"], "failed", "{status}");
    assert!(
        reports["failure"]["position"].as_u64().unwrap() <= position,
        "{status}"
    );
    assert!(reports["position"].as_u64().unwrap() < position, "{status}");
    assert!(!reports["failure"]["error"].as_str().unwrap().is_empty());
    let tickets = items.iter().find(|s| s["name"] == "tickets").unwrap();
    assert_ne!(tickets["state"], "failed");
    assert!(tickets["failure"].is_null());

    let metrics = app
        .send(Method::GET, "/metrics", None, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ledgerdesk_projection_failures_total{projection=\"reports\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ledgerdesk_projection_failed{projection=\"reports\"} 1"));
    assert!(metrics.contains("ledgerdesk_projection_failed{projection=\"tickets\"} 0"));

    // The fix, then a rebuild: ready again.
    ledgerdesk_tests::exec(
        &pool,
        "ALTER TABLE report_tickets_away RENAME TO report_tickets",
    )
    .await
    .unwrap();
    let res = app
        .post(
            "/api/v1/admin/projections/reports/rebuild",
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 202);
    for _ in 0..300 {
        let ready: Value = app
            .send(Method::GET, "/readyz", None, None)
            .await
            .json()
            .await
            .unwrap();
        if ready["status"] == "ready" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("still degraded after the rebuild");
}
