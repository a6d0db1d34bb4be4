//! Users, departments and reports read from the projections, through the
//! real server on both backends: people written any way at all (here by the
//! seed) are listed, the lists survive a rebuild, and reports show names.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ledgerdesk_tests::app::*;
use ledgerdesk_tests::{backend_tests, TestDb};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

backend_tests!(
    seeded_people_are_listed_and_survive_a_rebuild,
    a_new_user_is_listed_at_the_position_of_its_creation,
    reports_name_people_and_count_transfers_and_time,
    people_lists_page_by_cursor_like_every_list,
);

async fn list(app: &TestApp, path: &str) -> Vec<Value> {
    ok_json(app.get(path, &app.admin).await).await["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Wait until `path` lists `expected` again (a rebuild runs in the
/// background and swaps its tables in at once).
async fn until_listed(app: &TestApp, path: &str, expected: &[Value]) {
    for _ in 0..300 {
        if list(app, path).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never listed {expected:?} again");
}

async fn seeded_people_are_listed_and_survive_a_rebuild(db: &TestDb) {
    let app = spawn_app(db).await;
    ledgerdesk_app::seed::seed(&*app.store, 1, |_| {})
        .await
        .unwrap();
    let head = app.head().await;
    let users_path = format!("/api/v1/users?min_position={head}");
    let departments_path = format!("/api/v1/departments?min_position={head}");
    let users = list(&app, &users_path).await;
    // The seed's 20 agents and the first admin; never the system account.
    assert_eq!(users.len(), 21, "{users:?}");
    assert!(users.iter().any(|u| u["name"] == "Agent 20"));
    assert!(users
        .iter()
        .all(|u| u["email"] != "system@ledgerdesk.invalid"));
    let departments = list(&app, &departments_path).await;
    let names: Vec<&str> = departments
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Billing", "Returns", "Sales", "Technical support"]);
    let agent = users.iter().find(|u| u["name"] == "Agent 1").unwrap();
    let one = ok_json(
        app.get(
            &format!("/api/v1/users/{}", agent["id"].as_str().unwrap()),
            &app.admin,
        )
        .await,
    )
    .await;
    assert_eq!(one["email"], agent["email"]);
    assert_eq!(one["department_id"], agent["department_id"]);

    // Lose the read model's rows; a rebuild from the log brings back the
    // very same answers.
    let pool = app.store.db();
    ledgerdesk_tests::exec(&pool, "DELETE FROM people_users")
        .await
        .unwrap();
    ledgerdesk_tests::exec(&pool, "DELETE FROM people_departments")
        .await
        .unwrap();
    assert!(list(&app, &users_path).await.is_empty());
    let status = ok_json(app.get("/api/v1/admin/projections", &app.admin).await).await;
    assert!(
        status["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "people"),
        "{status}"
    );
    let res = app
        .post(
            "/api/v1/admin/projections/people/rebuild",
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 202);
    until_listed(&app, &users_path, &users).await;
    until_listed(&app, &departments_path, &departments).await;
}

async fn a_new_user_is_listed_at_the_position_of_its_creation(db: &TestDb) {
    let app = spawn_app(db).await;
    let dept = ok_json(
        app.post(
            "/api/v1/departments",
            &app.admin,
            json!({"name": "Returns"}),
        )
        .await,
    )
    .await;
    let created = ok_json(
        app.post(
            "/api/v1/users",
            &app.admin,
            json!({"name": "A new agent", "email": "New.Agent@Desk.Example",
                   "role": "agent", "password": "a-long-password",
                   "department_id": dept["id"]}),
        )
        .await,
    )
    .await;
    let position = created["position"].as_u64().unwrap();
    let page = ok_json(
        app.get(
            &format!("/api/v1/users?min_position={position}"),
            &app.admin,
        )
        .await,
    )
    .await;
    assert!(page["position"].as_u64().unwrap() >= position, "{page}");
    let new = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == created["id"])
        .unwrap_or_else(|| panic!("the new user is not listed: {page}"))
        .clone();
    assert_eq!(new["email"], "new.agent@desk.example");
    assert_eq!(new["department_id"], dept["id"]);
    let departments = list(
        &app,
        &format!("/api/v1/departments?min_position={}", dept["position"]),
    )
    .await;
    assert_eq!(departments[0]["name"], "Returns");
    // The same email, in another case, is still taken.
    let again = app
        .post(
            "/api/v1/users",
            &app.admin,
            json!({"name": "Twin", "email": "new.agent@desk.example",
                   "role": "agent", "password": "a-long-password"}),
        )
        .await;
    assert_eq!(problem(again, 409).await["code"], "email_taken");
}

/// An agent named `name`: (id, token).
async fn agent(app: &TestApp, name: &str) -> (Uuid, String) {
    let (id, token) = app.user("agent").await;
    ok_json(
        app.send(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&app.admin),
            Some(json!({ "name": name })),
        )
        .await,
    )
    .await;
    (id, token)
}

/// The log position a command answered with.
async fn position(res: reqwest::Response) -> u64 {
    ok_json(res).await["position"].as_u64().unwrap()
}

fn row<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no row for {id}: {report}"))
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to.timestamp_micros() - from.timestamp_micros()) as f64 / 1e6
}

async fn reports_name_people_and_count_transfers_and_time(db: &TestDb) {
    let app = spawn_app(db).await;
    let billing = ok_json(
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
    let returns = ok_json(
        app.post(
            "/api/v1/departments",
            &app.admin,
            json!({"name": "Returns"}),
        )
        .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (first, first_token) = agent(&app, "First agent").await;
    let (second, second_token) = agent(&app, "Second agent").await;
    let (_, auditor) = app.user("auditor").await;

    // One ticket's life: created and answered by the first agent (who has
    // it open meanwhile), transferred to the second agent in Returns, who
    // opens it, answers and resolves it and never leaves it.
    let ticket = app.ticket(&first_token).await;
    let t = |what: &str| format!("/api/v1/tickets/{ticket}/{what}");
    let mut at = Vec::new();
    let created = app.stream(&format!("ticket-{ticket}")).await[0].recorded_at;
    at.push(position(app.post(&t("views"), &first_token, json!({})).await).await);
    at.push(
        position(
            app.post(&t("messages"), &first_token, json!({"body": "On it."}))
                .await,
        )
        .await,
    );
    at.push(
        position(
            app.send(Method::DELETE, &t("views"), Some(&first_token), None)
                .await,
        )
        .await,
    );
    at.push(
        position(
            app.post(
                &t("transfer"),
                &first_token,
                json!({"to_agent": second, "to_department": returns}),
            )
            .await,
        )
        .await,
    );
    at.push(position(app.post(&t("views"), &second_token, json!({})).await).await);
    at.push(
        position(
            app.post(&t("messages"), &second_token, json!({"body": "Done."}))
                .await,
        )
        .await,
    );
    at.push(
        position(
            app.post(&t("status"), &second_token, json!({"status": "resolved"}))
                .await,
        )
        .await,
    );
    // Another ticket only ever transferred into Billing.
    let other = app.ticket(&first_token).await;
    let last = position(
        app.post(
            &format!("/api/v1/tickets/{other}/transfer"),
            &first_token,
            json!({ "to_department": billing }),
        )
        .await,
    )
    .await;
    let events = app.events().await;
    let time_of = |position: u64| {
        events
            .iter()
            .find(|e| e.position == position)
            .unwrap()
            .recorded_at
    };
    let [viewed, replied, left, _transferred, second_viewed, _second_replied, resolved] =
        [0, 1, 2, 3, 4, 5, 6].map(|i| time_of(at[i]));

    // Reports read their own writes once the projections are there.
    let wait = format!("/api/v1/tickets?min_position={last}");
    ok_json(app.get(&wait, &auditor).await).await;
    for _ in 0..100 {
        let status = ok_json(app.get("/api/v1/admin/projections", &auditor).await).await;
        if status["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["position"].as_u64().unwrap() >= last)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let departments = ok_json(app.get("/api/v1/reports/departments", &auditor).await).await;
    let billing_row = row(&departments, &billing);
    assert_eq!(billing_row["name"], "Billing", "{departments}");
    assert_eq!(billing_row["tickets_handled"], 1);
    assert_eq!(billing_row["tickets_created"], 0);
    let returns_row = row(&departments, &returns);
    assert_eq!(returns_row["name"], "Returns");
    assert_eq!(returns_row["tickets_handled"], 1);
    assert_eq!(returns_row["tickets_resolved"], 1);
    let agents = ok_json(app.get("/api/v1/reports/agents", &auditor).await).await;
    assert_eq!(row(&agents, &first.to_string())["name"], "First agent");
    assert_eq!(row(&agents, &first.to_string())["tickets_handled"], 2);
    assert_eq!(row(&agents, &second.to_string())["name"], "Second agent");

    // The time report over [creation, just after the resolution): the second
    // agent's view is still open and counts up to the end of the range.
    let from = created;
    let to = resolved + chrono::Duration::microseconds(1);
    let range = format!(
        "from={}&to={}",
        from.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
    .replace('+', "%2B");
    let by_agent = ok_json(
        app.get(
            &format!("/api/v1/reports/time?{range}&group=agent"),
            &auditor,
        )
        .await,
    )
    .await;
    assert_eq!(by_agent["group"], "agent");
    assert_eq!(by_agent["rows"].as_array().unwrap().len(), 2, "{by_agent}");
    let a = row(&by_agent, &first.to_string());
    assert_eq!(a["name"], "First agent");
    assert_eq!(a["tickets_handled"], 1);
    assert_eq!(a["replies"], 1);
    assert_eq!(
        a["median_first_response_seconds"],
        json!(seconds(created, replied))
    );
    assert_eq!(a["median_resolution_seconds"], Value::Null);
    assert_eq!(a["open_seconds"], json!(seconds(viewed, left)));
    let b = row(&by_agent, &second.to_string());
    assert_eq!(b["name"], "Second agent");
    assert_eq!(b["tickets_handled"], 1);
    assert_eq!(b["replies"], 1);
    assert_eq!(b["median_first_response_seconds"], Value::Null);
    assert_eq!(
        b["median_resolution_seconds"],
        json!(seconds(created, resolved))
    );
    assert_eq!(b["open_seconds"], json!(seconds(second_viewed, to)));

    let by_department = ok_json(
        app.get(
            &format!("/api/v1/reports/time?{range}&group=department"),
            &auditor,
        )
        .await,
    )
    .await;
    // The ticket had no department until the transfer; Billing's transfer
    // came after the range.
    assert_eq!(
        by_department["rows"].as_array().unwrap().len(),
        1,
        "{by_department}"
    );
    let r = row(&by_department, &returns);
    assert_eq!(r["name"], "Returns");
    assert_eq!(r["tickets_handled"], 1);
    assert_eq!(r["replies"], 1);
    assert_eq!(
        r["median_resolution_seconds"],
        json!(seconds(created, resolved))
    );
    assert_eq!(r["open_seconds"], json!(seconds(second_viewed, to)));

    problem(
        app.get("/api/v1/reports/time?group=team", &auditor).await,
        400,
    )
    .await;
    problem(app.get("/api/v1/reports/time", &first_token).await, 403).await;
}

/// Follow `first` page by page: every `next_cursor` in the body is the one
/// the `Link` header names; the items of all pages in order.
async fn walk(app: &TestApp, first: &str) -> (Vec<Value>, usize) {
    let (mut path, mut items, mut pages) = (first.to_string(), Vec::new(), 0);
    loop {
        let res = app.get(&path, &app.admin).await;
        let link = res
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_string());
        let body = ok_json(res).await;
        items.extend(body["items"].as_array().unwrap().iter().cloned());
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(next) => {
                let mut url = reqwest::Url::parse(&format!("http://x{first}")).unwrap();
                let kept: Vec<(String, String)> = url
                    .query_pairs()
                    .filter(|(k, _)| k != "cursor")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                url.query_pairs_mut()
                    .clear()
                    .extend_pairs(kept)
                    .append_pair("cursor", next);
                path = format!("{}?{}", url.path(), url.query().unwrap());
                assert_eq!(link.as_deref(), Some(&*format!("<{path}>; rel=\"next\"")));
            }
            None => {
                assert!(link.is_none(), "{link:?}");
                return (items, pages);
            }
        }
    }
}

/// Users and departments page like tickets, audit and the log: a keyset
/// cursor, `limit` (default 50, at most 500), the next cursor in the body
/// and the `Link` header; `offset` is not a parameter.
async fn people_lists_page_by_cursor_like_every_list(db: &TestDb) {
    let app = spawn_app(db).await;
    ledgerdesk_app::seed::seed(&*app.store, 1, |_| {})
        .await
        .unwrap();
    let head = app.head().await;
    let all_users = list(
        &app,
        &format!("/api/v1/users?limit=500&min_position={head}"),
    )
    .await;
    assert_eq!(all_users.len(), 21);
    let (users, pages) = walk(&app, &format!("/api/v1/users?limit=5&min_position={head}")).await;
    assert_eq!(pages, 5);
    assert_eq!(users, all_users, "every user once, in email order");
    let emails: Vec<&str> = users.iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert!(emails.windows(2).all(|w| w[0] < w[1]), "{emails:?}");

    let (departments, pages) = walk(&app, "/api/v1/departments?limit=3").await;
    assert_eq!(pages, 2);
    let names: Vec<&str> = departments
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Billing", "Returns", "Sales", "Technical support"]);

    // Cursors are opaque and stay with their list: a users cursor carries
    // no email, and neither departments nor tickets take it.
    let first = ok_json(app.get("/api/v1/users?limit=5", &app.admin).await).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    assert!(!cursor.contains('@'), "{cursor}");
    let elsewhere = [
        format!("/api/v1/departments?cursor={cursor}"),
        format!("/api/v1/tickets?cursor={cursor}"),
    ];
    for path in &elsewhere {
        let res = app.get(path, &app.admin).await;
        assert_eq!(res.status(), 400, "{path}");
    }

    for (path, field) in [
        ("/api/v1/users?offset=5", "offset"),
        ("/api/v1/users?limit=501", "limit"),
        ("/api/v1/users?limit=0", "limit"),
        ("/api/v1/users?cursor=nonsense", "cursor"),
        ("/api/v1/departments?cursor=nonsense", "cursor"),
        ("/api/v1/departments?limit=501", "limit"),
    ] {
        let res = app.get(path, &app.admin).await;
        assert_eq!(res.status(), 400, "{path}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["field"], field, "{path}: {problem}");
    }
}
