//! The audit endpoints over HTTP, on both backends: search with filters and
//! the query language, CSV/NDJSON export, the live stream, ticket time
//! travel and history, and erasure.

use std::time::Duration;

use ledgerdesk_store::OpenOptions;
use ledgerdesk_tests::app::*;
use ledgerdesk_tests::{backend_tests, TestDb};
use serde_json::{json, Value};
use uuid::Uuid;

backend_tests!(
    search_filters_pages_and_records_who_looked,
    malformed_queries_get_a_400_that_names_the_token,
    exports_stream_csv_and_ndjson,
    the_live_stream_resumes_without_gaps_or_duplicates,
    the_live_stream_ends_with_its_session,
    tickets_travel_in_time_and_show_their_history,
    erasure_shreds_personal_data_and_keeps_the_log_verifiable,
    live_streams_are_capped_per_user_until_one_closes,
    live_streams_share_one_reader_of_the_log,
    the_stream_filter_admits_what_search_finds,
);

/// The newest audit position, once the audit view has caught up.
async fn audit_page(app: &TestApp, token: &str, query: &str) -> Value {
    let head = app.head().await;
    let sep = if query.is_empty() { "" } else { "&" };
    ok_json(
        app.get(
            &format!("/api/v1/audit?min_position={head}{sep}{query}"),
            token,
        )
        .await,
    )
    .await
}

fn positions(page: &Value) -> Vec<u64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["position"].as_u64().unwrap())
        .collect()
}

async fn search_filters_pages_and_records_who_looked(db: &TestDb) {
    let app = spawn_app(db).await;
    let (agent_id, agent) = app.user("agent").await;
    let (auditor_id, auditor) = app.user("auditor").await;
    let t1 = app.ticket(&agent).await;
    let t2 = app.ticket(&agent).await;
    for (t, status) in [(t1, "open"), (t2, "open"), (t1, "resolved")] {
        ok_json(
            app.post(
                &format!("/api/v1/tickets/{t}/status"),
                &agent,
                json!({ "status": status }),
            )
            .await,
        )
        .await;
    }
    ok_json(
        app.post(
            &format!("/api/v1/tickets/{t1}/notes"),
            &agent,
            json!({"body": "refund approved"}),
        )
        .await,
    )
    .await;

    // Separate filters: one agent, one action.
    let page = audit_page(
        &app,
        &auditor,
        &format!("action=ticket.status_changed&actor={agent_id}"),
    )
    .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{page}");
    assert!(items.iter().all(|i| i["action"] == "ticket.status_changed"
        && i["label"] == "Ticket – Status"
        && i["actor_id"] == agent_id.to_string()));
    let ps = positions(&page);
    assert!(ps.windows(2).all(|w| w[0] > w[1]), "newest first: {ps:?}");
    let first = &items[0];
    for field in [
        "position",
        "event_id",
        "recorded_at",
        "actor_id",
        "action",
        "label",
        "ticket_id",
        "description",
        "changes",
        "ip",
        "user_agent",
    ] {
        assert!(first.get(field).is_some(), "{field} missing: {first}");
    }
    assert_eq!(first["changes"][0]["field"], "status");
    assert_eq!(first["changes"][0]["before"], "open");
    assert_eq!(first["changes"][0]["after"], "resolved");

    // Repeated parameters and comma lists mean "any of".
    let both = audit_page(&app, &auditor, &format!("ticket={t1}&ticket={t2}")).await;
    let listed = audit_page(&app, &auditor, &format!("ticket={t1},{t2}")).await;
    assert_eq!(positions(&both), positions(&listed));
    assert!(positions(&both).len() >= 5);

    // The query language: the same filters, negation and free text.
    let q = format!("action:ticket.status actor:{agent_id} -ticket:{t2}");
    let page = audit_page(&app, &app.admin, &format!("query={}", enc(&q))).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    assert!(page["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["ticket_id"] == t1.to_string()));
    let refund = audit_page(&app, &auditor, &format!("query={}", enc("\"refund\""))).await;
    // The note body is personal data and never in the audit view; the
    // search finds the note by its description only if it says so.
    assert!(refund["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["action"] != "ticket.note_added"));
    let notes = audit_page(&app, &auditor, "action=ticket.note_added").await;
    assert_eq!(notes["items"].as_array().unwrap().len(), 1);

    // A time frame: nothing before, everything within.
    let none = audit_page(&app, &auditor, "to=2000-01-01").await;
    assert!(none["items"].as_array().unwrap().is_empty());
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let all_today = audit_page(
        &app,
        &auditor,
        &format!("from={today}&to={today}&limit=500"),
    )
    .await;
    assert!(positions(&all_today).len() > 10);

    // Paging: the cursor is opaque and stays right while events arrive.
    let res = app.get("/api/v1/audit?limit=3", &auditor).await;
    let link = res.headers()["link"].to_str().unwrap().to_string();
    let p1 = ok_json(res).await;
    let cursor = p1["next_cursor"].as_str().unwrap().to_string();
    assert!(cursor.parse::<u64>().is_err(), "opaque: {cursor}");
    assert_eq!(
        link,
        format!("</api/v1/audit?limit=3&cursor={cursor}>; rel=\"next\"")
    );
    app.ticket(&agent).await;
    let p2 = ok_json(
        app.get(&format!("/api/v1/audit?limit=3&cursor={cursor}"), &auditor)
            .await,
    )
    .await;
    let (a, b) = (positions(&p1), positions(&p2));
    assert_eq!(b.len(), 3);
    assert!(a.last().unwrap() > b.first().unwrap());
    // No gap: p2 starts right below p1 among all positions.
    let all = positions(&audit_page(&app, &auditor, "limit=500").await);
    let at = all.iter().position(|p| p == a.last().unwrap()).unwrap();
    assert_eq!(&all[at + 1..at + 4], &b[..]);

    // The catalogue for the filter menu.
    let actions = ok_json(app.get("/api/v1/audit/actions", &auditor).await).await;
    let items = actions["items"].as_array().unwrap();
    assert!(items
        .iter()
        .any(|a| a["code"] == "ticket.status_changed" && a["label"] == "Ticket – Status"));
    assert!(items.iter().any(|a| a["label"] == "Audit – Searched"));

    // Agents may not look.
    problem(app.get("/api/v1/audit", &agent).await, 403).await;

    // Every search was recorded on the searcher's stream, with its filters.
    let searched: Vec<Value> = app
        .stream(&format!("user-{auditor_id}"))
        .await
        .into_iter()
        .filter(|e| e.event_type == "user.audit_searched")
        .map(|e| e.payload_json().unwrap())
        .collect();
    assert!(searched.len() >= 8, "{searched:?}");
    assert!(searched.iter().any(|p| p["query"]
        .as_str()
        .unwrap()
        .contains(&format!("actor:{agent_id}"))
        && p["query"]
            .as_str()
            .unwrap()
            .contains("action:ticket.status_changed")));
    // … and shows up in the audit log itself.
    let looked = audit_page(
        &app,
        &app.admin,
        &format!("action=user.audit_searched&actor={auditor_id}"),
    )
    .await;
    assert!(!looked["items"].as_array().unwrap().is_empty());
    assert_eq!(looked["items"][0]["label"], "Audit – Searched");
}

async fn malformed_queries_get_a_400_that_names_the_token(db: &TestDb) {
    let app = spawn_app(db).await;
    let head = app.head().await;
    for (query, token) in [
        ("action:ticket.status colour:red", "colour:red"),
        ("actor:bob", "actor:bob"),
        ("created:yesterday", "created:yesterday"),
        ("\"unclosed", "\"unclosed"),
        ("action:no.such", "action:no.such"),
    ] {
        let res = app
            .get(&format!("/api/v1/audit?query={}", enc(query)), &app.admin)
            .await;
        let body = problem(res, 400).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(token), "{query}: {detail}");
        assert!(body.to_string().contains("query"), "{body}");
    }
    for (params, field) in [
        ("query=action:ticket&action=ticket.created", "query"),
        ("actor=nope", "actor"),
        ("from=2026-02-01&to=2026-01-01", "from"),
        ("limit=0", "limit"),
        ("cursor=MTIz", "cursor"),
        ("format=xml", "format"),
        ("colour=red", "colour"),
        ("query=action:ticket&query=action:user", "query"),
        ("limit=5&limit=6", "limit"),
    ] {
        let res = app
            .get(&format!("/api/v1/audit?{params}"), &app.admin)
            .await;
        let body = problem(res, 400).await;
        assert!(body.to_string().contains(field), "{params}: {body}");
    }
    // A refused search writes nothing.
    assert_eq!(app.head().await, head);
}

/// Minimal RFC 4180 reader: records of fields, quotes doubled inside.
fn read_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    records
}

async fn exports_stream_csv_and_ndjson(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let (auditor_id, auditor) = app.user("auditor").await;
    let t = app.ticket(&agent).await;
    ok_json(
        app.post(
            "/api/v1/activity",
            &agent,
            json!({"action": "import", "description": "Imported 3 rows, \"legacy\" CRM; =SUM(A1)"}),
        )
        .await,
    )
    .await;
    for _ in 0..30 {
        ok_json(
            app.post(
                &format!("/api/v1/tickets/{t}/tags"),
                &agent,
                json!({"add": [format!("t{}", Uuid::now_v7().simple())]}),
            )
            .await,
        )
        .await;
    }
    let head = app.head().await;
    let all = audit_page(&app, &auditor, "limit=500").await;
    let expected = positions(&all);

    // CSV: header, one record per entry, RFC 4180 quoting, UTF-8 with BOM.
    let res = app
        .get(
            &format!("/api/v1/audit?format=csv&min_position={head}"),
            &auditor,
        )
        .await;
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/csv"), "{ct}");
    assert!(res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let body = res.text().await.unwrap();
    assert!(body.starts_with('\u{feff}'));
    let records = read_csv(body.trim_start_matches('\u{feff}'));
    assert_eq!(records[0][0], "position");
    assert_eq!(records[0][8], "label");
    let rows = &records[1..];
    let got: Vec<u64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    // The export is a snapshot at its start: it may hold the record of the
    // search just before it, never its own.
    assert!(
        got.ends_with(&expected) && got.len() <= expected.len() + 1,
        "{got:?} vs {expected:?}"
    );
    assert!(rows.iter().all(|r| r.len() == records[0].len()));
    let import = rows
        .iter()
        .find(|r| r[7] == "user.general_action")
        .expect("the general action");
    assert_eq!(
        import[10],
        "import: Imported 3 rows, \"legacy\" CRM; =SUM(A1)"
    );

    // NDJSON through Accept, with a filter.
    let res = app
        .client
        .get(app.url(&format!("/api/v1/audit?ticket={t}")))
        .bearer_auth(&auditor)
        .header("Accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let body = res.text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 31, "created + 30 tag changes");
    assert!(lines.iter().all(|l| l["ticket_id"] == t.to_string()));
    assert!(lines
        .windows(2)
        .all(|w| w[0]["position"].as_u64() > w[1]["position"].as_u64()));

    let exported: Vec<Value> = app
        .stream(&format!("user-{auditor_id}"))
        .await
        .into_iter()
        .filter(|e| e.event_type == "user.audit_exported")
        .map(|e| e.payload_json().unwrap())
        .collect();
    assert_eq!(exported.len(), 2);
    assert_eq!(exported[0]["format"], "csv");
    assert_eq!(exported[1]["format"], "ndjson");
    assert_eq!(exported[1]["query"], format!("ticket:{t}"));
}

/// Read SSE events (`id`, parsed `data`) until `n` have arrived.
async fn read_events(res: &mut reqwest::Response, n: usize) -> Vec<(u64, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(20), res.chunk())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse().unwrap());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
    }
    out
}

async fn the_live_stream_resumes_without_gaps_or_duplicates(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let (_, auditor) = app.user("auditor").await;
    let t = app.ticket(&agent).await;
    let notes_path = format!("/api/v1/tickets/{t}/notes");
    let note = |i: usize| app.post(&notes_path, &agent, json!({ "body": format!("note {i}") }));
    let open = |last: Option<u64>| {
        let mut req = app
            .client
            .get(app.url("/api/v1/audit/stream?query=action:ticket.note_added"))
            .bearer_auth(&auditor);
        if let Some(id) = last {
            req = req.header("Last-Event-ID", id.to_string());
        }
        req.send()
    };
    let mut res = open(None).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    for i in 0..5 {
        ok_json(note(i).await).await;
    }
    let first = read_events(&mut res, 3).await;
    drop(res);
    // More happen while nobody listens.
    for i in 5..10 {
        ok_json(note(i).await).await;
    }
    let last = first.last().unwrap().0;
    let mut res = open(Some(last)).await.unwrap();
    // The first read may have taken more than 3 (one chunk holds a page).
    let rest = read_events(&mut res, 10 - first.len()).await;
    let ids: Vec<u64> = first.iter().chain(&rest).map(|(id, _)| *id).collect();
    let notes: Vec<u64> = app
        .stream(&format!("ticket-{t}"))
        .await
        .into_iter()
        .filter(|e| e.event_type == "ticket.note_added")
        .map(|e| e.position)
        .collect();
    assert_eq!(ids, notes, "every note once, in order");
    assert!(rest
        .iter()
        .all(|(id, data)| data["position"].as_u64() == Some(*id)
            && data["action"] == "ticket.note_added"));
    // Bad resume points are refused.
    let res = app
        .client
        .get(app.url("/api/v1/audit/stream"))
        .bearer_auth(&auditor)
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    problem(res, 400).await;
}

async fn the_live_stream_ends_with_its_session(db: &TestDb) {
    use ledgerdesk_api::routes::audit::SESSION_CHECK;
    let app = spawn_app(db).await;
    let (_, auditor) = app.user("auditor").await;
    let mut res = app
        .client
        .get(app.url("/api/v1/audit/stream"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Its last entry for now is its own connection, recorded as a look at
    // the log (before it, what the audit view had not reached yet).
    // One chunk may hold several entries.
    while !read_events(&mut res, 1)
        .await
        .iter()
        .any(|(_, entry)| entry["action"] == "user.audit_searched")
    {}
    // While the session lasts the stream stays open past a check (nothing
    // more to send before the keep-alive).
    assert!(
        tokio::time::timeout(SESSION_CHECK + Duration::from_secs(1), res.chunk())
            .await
            .is_err(),
        "the stream ended while its session was valid"
    );
    ok_json(app.post("/api/v1/auth/logout", &auditor, json!({})).await).await;
    let ended = tokio::time::timeout(SESSION_CHECK * 3, async {
        while res.chunk().await.ok().flatten().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its session");
}

async fn tickets_travel_in_time_and_show_their_history(db: &TestDb) {
    let app = spawn_app(db).await;
    let (agent_id, agent) = app.user("agent").await;
    let t = app.ticket(&agent).await;
    let path = |a: &str| format!("/api/v1/tickets/{t}/{a}");
    let opened = ok_json(
        app.post(&path("status"), &agent, json!({"status": "open"}))
            .await,
    )
    .await;
    let at_open = opened["position"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let moment = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    ok_json(
        app.post(&path("priority"), &agent, json!({"priority": "urgent"}))
            .await,
    )
    .await;
    ok_json(
        app.post(&path("status"), &agent, json!({"status": "resolved"}))
            .await,
    )
    .await;

    let now = ok_json(app.get(&format!("/api/v1/tickets/{t}"), &agent).await).await;
    assert_eq!(
        (now["status"].as_str(), now["priority"].as_str()),
        (Some("resolved"), Some("urgent"))
    );
    let then = ok_json(
        app.get(
            &format!("/api/v1/tickets/{t}?at_position={at_open}"),
            &agent,
        )
        .await,
    )
    .await;
    assert_eq!(then["status"], "open");
    assert_eq!(then["priority"], "normal");
    assert_eq!(then["version"], 2);
    let as_of = ok_json(
        app.get(
            &format!("/api/v1/tickets/{t}?as_of={}", enc(&moment.to_rfc3339())),
            &agent,
        )
        .await,
    )
    .await;
    assert_eq!(as_of, then);
    problem(
        app.get(
            &format!("/api/v1/tickets/{t}?as_of=2000-01-01T00:00:00Z"),
            &agent,
        )
        .await,
        404,
    )
    .await;
    problem(
        app.get(
            &format!("/api/v1/tickets/{t}?as_of=2000-01-01T00:00:00Z&at_position=3"),
            &agent,
        )
        .await,
        400,
    )
    .await;
    for (query, field) in [
        ("as_of=last+week", "as_of"),
        ("at_position=-3", "at_position"),
    ] {
        let p = problem(
            app.get(&format!("/api/v1/tickets/{t}?{query}"), &agent)
                .await,
            400,
        )
        .await;
        assert_eq!(p["field"], field, "{query}: {p}");
    }

    let history = ok_json(app.get(&path("history"), &agent).await).await;
    let items = history["items"].as_array().unwrap();
    let labels: Vec<&str> = items.iter().map(|i| i["label"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        [
            "Ticket – Created",
            "Ticket – Status",
            "Ticket – Priority",
            "Ticket – Status"
        ]
    );
    assert!(items.iter().all(|i| i["actor_id"] == agent_id.to_string()));
    assert_eq!(items[2]["changes"][0]["before"], "normal");
    assert_eq!(items[2]["changes"][0]["after"], "urgent");
    let versions: Vec<u64> = items
        .iter()
        .map(|i| i["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    let until = ok_json(
        app.get(
            &format!("{}?at_position={at_open}", path("history")),
            &agent,
        )
        .await,
    )
    .await;
    assert_eq!(until["items"].as_array().unwrap().len(), 2);
    problem(
        app.get(
            &format!("/api/v1/tickets/{}/history", Uuid::now_v7()),
            &agent,
        )
        .await,
        404,
    )
    .await;
}

async fn erasure_shreds_personal_data_and_keeps_the_log_verifiable(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let (_, auditor) = app.user("auditor").await;
    let me = ok_json(app.get("/api/v1/me", &app.admin).await).await;
    let admin_id = me["id"].as_str().unwrap().to_string();
    let erin = ok_json(
        app.post(
            "/api/v1/tickets",
            &agent,
            json!({"subject": "Card ending 4242", "body": "Please refund me.", "channel": "email",
                   "requester": {"email": "erin@customer.example", "name": "Erin Example"}}),
        )
        .await,
    )
    .await;
    let t = erin["id"].as_str().unwrap().to_string();
    let other = app.ticket(&agent).await;
    let head = app.head().await;
    let list = ok_json(
        app.get(&format!("/api/v1/tickets?min_position={head}"), &agent)
            .await,
    )
    .await;
    let row = |list: &Value, id: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    let before = row(&list, &t);
    assert_eq!(before["requester_name"], "Erin Example");
    let subject = before["data_subject"].as_str().unwrap().to_string();

    // Only admins erase; bad bodies are refused and write nothing.
    problem(
        app.post(
            "/api/v1/admin/erasure",
            &auditor,
            json!({ "subject": subject }),
        )
        .await,
        403,
    )
    .await;
    problem(
        app.post("/api/v1/admin/erasure", &app.admin, json!({}))
            .await,
        400,
    )
    .await;
    problem(
        app.post(
            "/api/v1/admin/erasure",
            &app.admin,
            json!({"subject": Uuid::now_v7()}),
        )
        .await,
        404,
    )
    .await;
    assert_eq!(app.head().await, head);

    let raw = ledgerdesk_store::open(&db.url, &OpenOptions::default())
        .await
        .unwrap();
    let chain_before = ledgerdesk_store::verify_chain(raw.as_ref()).await.unwrap();
    assert!(chain_before.ok());

    // An email filed under a subject before any of their data was sealed
    // (a command refused after the mapping was made) is personal data too:
    // it can be erased, and then it is gone.
    let unsealed = Uuid::now_v7();
    ledgerdesk_tests::exec(
        &raw.db(),
        &format!(
            "INSERT INTO data_subjects (subject_id, email, created_at) \
             VALUES ('{unsealed}', 'never-sealed@customer.example', 0)"
        ),
    )
    .await
    .unwrap();
    let done = ok_json(
        app.post(
            "/api/v1/admin/erasure",
            &app.admin,
            json!({"email": "never-sealed@customer.example"}),
        )
        .await,
    )
    .await;
    assert_eq!(done["subject"], unsealed.to_string());
    let p = problem(
        app.post(
            "/api/v1/admin/erasure",
            &app.admin,
            json!({"email": "never-sealed@customer.example"}),
        )
        .await,
        404,
    )
    .await;
    assert_eq!(p["code"], "subject_not_found");
    let p = problem(
        app.post(
            "/api/v1/admin/erasure",
            &app.admin,
            json!({ "subject": unsealed }),
        )
        .await,
        409,
    )
    .await;
    assert_eq!(p["code"], "already_erased");

    // By email, as an admin would know the person.
    let done = ok_json(
        app.post(
            "/api/v1/admin/erasure",
            &app.admin,
            json!({"email": "Erin@Customer.example"}),
        )
        .await,
    )
    .await;
    assert_eq!(done["subject"], subject);
    let position = done["position"].as_u64().unwrap();
    let recorded = app.stream(&format!("user-{admin_id}")).await;
    let erased_event = recorded
        .iter()
        .rfind(|e| e.event_type == "user.personal_data_erased")
        .expect("the erasure is an event");
    assert_eq!(erased_event.position, position);
    assert_eq!(erased_event.payload_json().unwrap()["subject"], subject);
    problem(
        app.post(
            "/api/v1/admin/erasure",
            &app.admin,
            json!({ "subject": subject }),
        )
        .await,
        409,
    )
    .await;

    // Every view reads [erased]; others keep their data.
    let list = ok_json(
        app.get(&format!("/api/v1/tickets?min_position={position}"), &agent)
            .await,
    )
    .await;
    let after = row(&list, &t);
    assert_eq!(after["requester_name"], "[erased]");
    assert_eq!(after["requester_email"], "[erased]");
    assert_eq!(after["subject"], "[erased]");
    assert_eq!(row(&list, &other.to_string())["requester_name"], "Carol");
    // The audit log shows who erased whom, and no personal data.
    let audit = ok_json(
        app.get(
            &format!("/api/v1/audit?action=user.personal_data_erased&min_position={position}"),
            &auditor,
        )
        .await,
    )
    .await;
    assert_eq!(audit["items"][0]["actor_id"], admin_id);
    assert_eq!(audit["items"][0]["label"], "Privacy – Personal data erased");
    let csv = app
        .get("/api/v1/audit?format=csv", &auditor)
        .await
        .text()
        .await
        .unwrap();
    assert!(!csv.contains("Erin") && !csv.contains("4242"));

    // A rebuild from the log reads [erased] too.
    ledgerdesk_projections::Projector::new(app.store.clone())
        .rebuild("tickets", |_, _| {})
        .await
        .unwrap();
    let rebuilt = ok_json(
        app.get(&format!("/api/v1/tickets?min_position={position}"), &agent)
            .await,
    )
    .await;
    assert_eq!(row(&rebuilt, &t)["requester_name"], "[erased]");
    assert_eq!(row(&rebuilt, &other.to_string())["requester_name"], "Carol");

    // The stored log is untouched: the chain still verifies, one event longer.
    let chain_after = ledgerdesk_store::verify_chain(raw.as_ref()).await.unwrap();
    assert!(chain_after.ok());
    assert!(chain_after.verified > chain_before.verified);
    // … and so do the Merkle leaves and every signed checkpoint (the server
    // signed one at start, over events from before the erasure).
    let verified = ok_json(app.get("/api/v1/admin/verify", &auditor).await).await;
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(
        verified["checkpoints_checked"].as_u64().unwrap() >= 1,
        "{verified}"
    );
}

async fn open_stream(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/v1/audit/stream{query}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn live_streams_are_capped_per_user_until_one_closes(db: &TestDb) {
    let app = spawn_app_with(db, &[("LEDGERDESK__AUDIT__MAX_STREAMS_PER_USER", "3")]).await;
    let (_, auditor) = app.user("auditor").await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let res = open_stream(&app, &auditor, "").await;
        assert_eq!(res.status(), 200);
        open.push(res);
    }
    let res = open_stream(&app, &auditor, "").await;
    assert!(
        res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let refused = problem(res, 429).await;
    assert_eq!(refused["code"], "too_many_streams");
    // Another user has streams of their own.
    let (_, other) = app.user("auditor").await;
    assert_eq!(open_stream(&app, &other, "").await.status(), 200);
    // A client that goes away gives its slot back (the server notices at
    // its next write at the latest: an entry makes one).
    drop(open.pop());
    let t = app.ticket(&app.admin).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let res = open_stream(&app, &auditor, "").await;
        if res.status() == 200 {
            break;
        }
        problem(res, 429).await;
        assert!(
            std::time::Instant::now() < deadline,
            "the closed stream kept its slot"
        );
        ok_json(
            app.post(
                &format!("/api/v1/tickets/{t}/notes"),
                &app.admin,
                json!({"body": "ping"}),
            )
            .await,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn live_streams_share_one_reader_of_the_log(db: &TestDb) {
    const STREAMS: usize = 8;
    let app = spawn_app_with(db, &[("LEDGERDESK__AUDIT__MAX_STREAMS_PER_USER", "10")]).await;
    let (_, agent) = app.user("agent").await;
    let (_, auditor) = app.user("auditor").await;
    let t = app.ticket(&agent).await;
    let notes_path = format!("/api/v1/tickets/{t}/notes");
    let note = |i: usize| app.post(&notes_path, &agent, json!({ "body": format!("note {i}") }));
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        // Half follow everything, half only notes (a filter decided
        // without the database).
        let query = if i % 2 == 0 {
            ""
        } else {
            "?query=action:ticket.note_added"
        };
        streams.push(open_stream(&app, &auditor, query).await);
    }
    // Until every stream is live and has heard the follower once.
    ok_json(note(0).await).await;
    for res in &mut streams {
        while !read_events(res, 1)
            .await
            .iter()
            .any(|(_, e)| e["action"] == "ticket.note_added")
        {}
    }
    let (streams_before, follower_before) = (
        app.audit_feed.stream_reads(),
        app.audit_feed.follower_reads(),
    );
    for i in 1..=3 {
        ok_json(note(i).await).await;
    }
    for res in &mut streams {
        let mut notes = 0;
        while notes < 3 {
            notes += read_events(res, 1)
                .await
                .iter()
                .filter(|(_, e)| e["action"] == "ticket.note_added")
                .count();
        }
    }
    // The entries reached every stream without one query per stream.
    assert_eq!(app.audit_feed.stream_reads(), streams_before);
    assert!(app.audit_feed.follower_reads() > follower_before);
}

/// The live stream filters rows in memory (`AuditFilter::admits`); search
/// filters them in SQL. For every filter an auditor can set without text,
/// both must keep the same rows.
async fn the_stream_filter_admits_what_search_finds(db: &TestDb) {
    use ledgerdesk_projections::audit::{search, AuditFilter};
    let app = spawn_app(db).await;
    let (agent_id, agent) = app.user("agent").await;
    let ticket = app.ticket(&agent).await;
    ok_json(
        app.post(
            &format!("/api/v1/tickets/{ticket}/notes"),
            &app.admin,
            json!({"body": "a note"}),
        )
        .await,
    )
    .await;
    let all = audit_page(&app, &app.admin, "limit=500").await;
    assert!(all["items"].as_array().unwrap().len() > 5);
    let pool = app.store.db();
    let every = search(
        &pool,
        &AuditFilter {
            limit: Some(500),
            ..AuditFilter::default()
        },
    )
    .await
    .unwrap()
    .items;
    let middle = every[every.len() / 2].recorded_at;
    let admin_id: Uuid = ok_json(app.get("/api/v1/me", &app.admin).await).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut filters = vec![
        AuditFilter {
            actions: vec!["ticket.created".into(), "ticket.note_added".into()],
            ..Default::default()
        },
        AuditFilter {
            actors: vec![agent_id],
            ..Default::default()
        },
        AuditFilter {
            tickets: vec![ticket],
            ..Default::default()
        },
        AuditFilter {
            ips: vec!["127.0.0.1".into()],
            ..Default::default()
        },
        AuditFilter {
            from: Some(middle),
            ..Default::default()
        },
        AuditFilter {
            to: Some(middle),
            ..Default::default()
        },
        AuditFilter {
            departments: vec![Uuid::now_v7()],
            ..Default::default()
        },
    ];
    let mut excluding = AuditFilter::default();
    excluding.exclude.actors = vec![admin_id];
    excluding.exclude.actions = vec!["user.logged_in".into()];
    filters.push(excluding);
    // Only the rows `every` saw: the view may apply more meanwhile.
    let newest = every[0].position;
    for mut filter in filters {
        filter.limit = Some(500);
        filter.before_position = Some(newest + 1);
        let found: Vec<u64> = search(&pool, &filter)
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| r.position)
            .collect();
        let admitted: Vec<u64> = every
            .iter()
            .filter(|r| filter.admits(r).expect("no text: decided in memory"))
            .map(|r| r.position)
            .collect();
        assert_eq!(admitted, found, "{filter:?}");
    }
    let text = AuditFilter {
        text: vec!["note".into()],
        ..Default::default()
    };
    assert_eq!(
        text.admits(&every[0]),
        None,
        "text is the database's to match"
    );
}
