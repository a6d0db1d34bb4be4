//! Users, departments and reports read from the projections, through the
//! real server on both backends: people written any way at all (here by the
//! seed) are listed, the lists survive a rebuild, and reports show names.

use std::time::Duration;

use ledgerdesk_tests::app::*;
use ledgerdesk_tests::{backend_tests, TestDb};
use serde_json::{json, Value};

backend_tests!(
    seeded_people_are_listed_and_survive_a_rebuild,
    a_new_user_is_listed_at_the_position_of_its_creation,
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
    assert!(users.iter().all(|u| u["email"] != "system@ledgerdesk.invalid"));
    let departments = list(&app, &departments_path).await;
    let names: Vec<&str> = departments
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Billing", "Returns", "Sales", "Technical support"]);
    let agent = users.iter().find(|u| u["name"] == "Agent 1").unwrap();
    let one = ok_json(
        app.get(&format!("/api/v1/users/{}", agent["id"].as_str().unwrap()), &app.admin)
            .await,
    )
    .await;
    assert_eq!(one["email"], agent["email"]);
    assert_eq!(one["department_id"], agent["department_id"]);

    // Lose the read model's rows; a rebuild from the log brings back the
    // very same answers.
    let pool = app.store.pool();
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
        app.get(&format!("/api/v1/users?min_position={position}"), &app.admin)
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
