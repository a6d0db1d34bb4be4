//! What an agent reads of a ticket over HTTP: the header, the whole thread
//! (paged, attachments, internal items), time travel, erasure, splits and
//! merges, and a rebuild of the conversation projection. The real server on
//! port 0, on both backends.

use std::time::Duration;

use ledgerdesk_tests::app::*;
use ledgerdesk_tests::{backend_tests, TestDb};
use serde_json::{json, Value};
use uuid::Uuid;

backend_tests!(
    an_agent_reads_the_whole_conversation,
    a_long_thread_pages_every_item_once_in_order,
    splits_and_merges_show_in_the_thread_and_survive_a_rebuild,
    min_position_is_accepted_on_every_read,
    a_due_date_is_set_and_cleared_and_shows_in_the_history,
);

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

/// Opened by `token` for Dana, as the README's curl flow does: its id.
async fn open_ticket(app: &TestApp, token: &str) -> String {
    let created = ok_json(
        app.post(
            "/api/v1/tickets",
            token,
            json!({"subject": "Invoice missing", "body": "Where is my invoice?", "channel": "email",
                   "requester": {"name": "Dana", "email": "dana@customer.example"}}),
        )
        .await,
    )
    .await;
    created["id"].as_str().unwrap().to_string()
}

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("items")
}

fn bodies(page: &Value) -> Vec<&str> {
    items(page)
        .iter()
        .map(|i| i["body"].as_str().unwrap_or(""))
        .collect()
}

async fn an_agent_reads_the_whole_conversation(db: &TestDb) {
    let app = spawn_app(db).await;
    let (agent_id, agent) = app.user("agent").await;
    let id = open_ticket(&app, &agent).await;
    let t = |a: &str| format!("/api/v1/tickets/{id}/{a}");
    ok_json(
        app.post(
            &t("messages"),
            &agent,
            json!({"body": "We are looking into it."}),
        )
        .await,
    )
    .await;
    ok_json(
        app.post(
            &t("notes"),
            &agent,
            json!({"body": "Billing system was down."}),
        )
        .await,
    )
    .await;
    let (ct, body) = multipart("invoice.pdf", "application/pdf", b"%PDF-1.4 invoice");
    let res = app
        .client
        .post(app.url(&t("files")))
        .bearer_auth(&agent)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    let before_second_reply = ok_json(res).await["position"].as_u64().unwrap();

    let res = app.get(&format!("/api/v1/tickets/{id}"), &agent).await;
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let ticket = ok_json(res).await;
    assert_eq!(etag, format!("\"{}\"", ticket["version"]));
    assert_eq!(ticket["subject"], "Invoice missing");
    assert_eq!(ticket["requester"]["name"], "Dana");
    assert_eq!(ticket["requester"]["email"], "dana@customer.example");
    assert_eq!(ticket["status"], "new");
    assert_eq!(ticket["channel"], "email");
    assert_eq!(ticket["message_count"], 2);
    assert!(ticket["created_at"].is_string() && ticket["first_response_at"].is_string());
    let thread = &ticket["messages"];
    assert_eq!(
        bodies(thread),
        [
            "Where is my invoice?",
            "We are looking into it.",
            "Billing system was down.",
            ""
        ]
    );
    let kinds: Vec<&str> = items(thread)
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["message", "message", "note", "file"]);
    let labels: Vec<&str> = items(thread)
        .iter()
        .map(|i| i["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "Ticket – Created",
            "Ticket – Message",
            "Ticket – Note",
            "Ticket – File"
        ]
    );
    let [opening, reply, note, file] = items(thread).as_slice() else {
        panic!("four items: {thread}");
    };
    assert_eq!(opening["author"]["kind"], "customer");
    assert_eq!(opening["author"]["name"], "Dana");
    assert_eq!(opening["direction"], "inbound");
    assert_eq!(reply["author"]["kind"], "agent");
    assert_eq!(reply["author"]["id"], agent_id.to_string());
    assert_eq!(reply["author"]["name"], "A agent");
    assert_eq!(reply["direction"], "outbound");
    assert_eq!(reply["internal"], false);
    assert_eq!(note["internal"], true);
    let attachment = &file["attachments"][0];
    assert_eq!(attachment["file_name"], "invoice.pdf");
    assert_eq!(attachment["content_type"], "application/pdf");
    assert_eq!(attachment["size"], 16);
    let url = attachment["download_url"].as_str().unwrap();
    assert_eq!(
        url,
        format!("/api/v1/files/{}", attachment["sha256"].as_str().unwrap())
    );
    let download = app.get(url, &agent).await;
    assert_eq!(download.status(), 200);
    assert_eq!(
        download.bytes().await.unwrap().as_ref(),
        b"%PDF-1.4 invoice"
    );

    // Another reply is read at once, and is absent from the past.
    ok_json(
        app.post(
            &t("messages"),
            &agent,
            json!({"body": "Found it, sending now."}),
        )
        .await,
    )
    .await;
    let page = ok_json(app.get(&t("messages"), &agent).await).await;
    assert_eq!(items(&page).len(), 5);
    assert_eq!(bodies(&page)[4], "Found it, sending now.");
    let then = ok_json(
        app.get(
            &format!("/api/v1/tickets/{id}?at_position={before_second_reply}"),
            &agent,
        )
        .await,
    )
    .await;
    assert_eq!(items(&then["messages"]).len(), 4);
    assert_eq!(then["message_count"], 2);
    assert_eq!(then["subject"], "Invoice missing");
    let past_page = ok_json(
        app.get(
            &t(&format!("messages?at_position={before_second_reply}")),
            &agent,
        )
        .await,
    )
    .await;
    assert_eq!(past_page["items"], then["messages"]["items"]);
    // The past has the same shape as the present.
    let now = ok_json(app.get(&format!("/api/v1/tickets/{id}"), &agent).await).await;
    assert_eq!(
        items(&now["messages"])[..4],
        items(&then["messages"])[..],
        "the past reads differently from the present"
    );
    assert_eq!(now["requester"], then["requester"]);

    // Erasure: the customer's name, email and text read [erased] now and
    // in the past.
    ok_json(
        app.post(
            "/api/v1/admin/erasure",
            &app.admin,
            json!({"email": "dana@customer.example"}),
        )
        .await,
    )
    .await;
    let erased = ok_json(app.get(&format!("/api/v1/tickets/{id}"), &agent).await).await;
    let page = ok_json(app.get(&t("messages"), &agent).await).await;
    let past = ok_json(
        app.get(
            &format!("/api/v1/tickets/{id}?at_position={before_second_reply}"),
            &agent,
        )
        .await,
    )
    .await;
    for (what, view) in [("now", &erased), ("past", &past)] {
        assert_eq!(view["subject"], "[erased]", "{what}");
        assert_eq!(view["requester"]["name"], "[erased]", "{what}");
        assert_eq!(view["requester"]["email"], "[erased]", "{what}");
        let first = &view["messages"]["items"][0];
        assert_eq!(first["body"], "[erased]", "{what}");
        assert_eq!(first["author"]["name"], "[erased]", "{what}");
        assert_eq!(
            view["messages"]["items"][3]["attachments"][0]["file_name"], "[erased]",
            "{what}"
        );
    }
    assert_eq!(page["items"][0]["body"], "[erased]");
    assert_eq!(page["items"][0]["author"]["name"], "[erased]");
    assert!(page.to_string().find("Where is my invoice").is_none());
    assert!(erased.to_string().find("Dana").is_none());
    // The agent's name is not the customer's personal data.
    assert_eq!(page["items"][1]["author"]["name"], "A agent");
}

async fn a_long_thread_pages_every_item_once_in_order(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let id = open_ticket(&app, &agent).await;
    let path = format!("/api/v1/tickets/{id}/messages");
    for n in 0..600 {
        let res = app
            .post(&path, &agent, json!({"body": format!("reply {n}")}))
            .await;
        assert_eq!(res.status(), 200);
    }

    // The header embeds the first page, with the cursor to the rest.
    let ticket = ok_json(app.get(&format!("/api/v1/tickets/{id}"), &agent).await).await;
    assert_eq!(items(&ticket["messages"]).len(), 50);
    assert_eq!(ticket["message_count"], 601);
    assert!(ticket["messages"]["next_cursor"].is_string());

    let mut seen: Vec<Value> = Vec::new();
    let mut next = Some(format!("{path}?limit=250"));
    let mut pages = 0;
    while let Some(url) = next.take() {
        let res = app.get(&url, &agent).await;
        let link = res
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string());
        let page = ok_json(res).await;
        pages += 1;
        assert!(items(&page).len() <= 250);
        seen.extend(items(&page).iter().cloned());
        match (&page["next_cursor"], link) {
            (Value::String(cursor), Some(link)) => {
                let (target, rel) = link.split_once("; ").unwrap();
                assert_eq!(rel, "rel=\"next\"");
                let target = target.trim_start_matches('<').trim_end_matches('>');
                assert!(target.contains(&format!("cursor={cursor}")), "{target}");
                next = Some(target.to_string());
            }
            (Value::Null, None) => {}
            other => panic!("cursor and Link disagree: {other:?}"),
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 601);
    let positions: Vec<u64> = seen
        .iter()
        .map(|i| i["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "not in order");
    let ids: std::collections::BTreeSet<&str> =
        seen.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 601, "an item came twice");
    assert_eq!(seen[1]["body"], "reply 0");
    assert_eq!(seen[600]["body"], "reply 599");

    // The same walk on the past: the thread as it stood at the 300th reply.
    let at = seen[300]["position"].as_u64().unwrap();
    let mut past = 0;
    let mut next = Some(format!("{path}?limit=500&at_position={at}"));
    while let Some(url) = next.take() {
        let res = app.get(&url, &agent).await;
        next = res.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            l[1..l.find('>').unwrap()].to_string()
        });
        past += items(&ok_json(res).await).len();
    }
    assert_eq!(past, 301);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=abc", "cursor"),
        ("min_position=-1", "min_position"),
    ] {
        let p = problem(app.get(&format!("{path}?{query}"), &agent).await, 400).await;
        assert_eq!(p["field"], field, "{query}: {p}");
    }
    problem(
        app.get(
            &format!("/api/v1/tickets/{}/messages", Uuid::now_v7()),
            &agent,
        )
        .await,
        404,
    )
    .await;
}

/// Polls `path` until it answers `expected` (a rebuild runs in the
/// background and swaps in when done).
async fn until_equal(app: &TestApp, token: &str, path: &str, expected: &Value) {
    let mut last = Value::Null;
    for _ in 0..300 {
        last = ok_json(app.get(path, token).await).await;
        if &last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never answered as before the rebuild:\n{last}\nexpected:\n{expected}");
}

async fn splits_and_merges_show_in_the_thread_and_survive_a_rebuild(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let id = open_ticket(&app, &agent).await;
    let t = |a: &str| format!("/api/v1/tickets/{id}/{a}");
    let refund = ok_json(
        app.post(
            &t("messages"),
            &agent,
            json!({"body": "Also, I want a refund.", "direction": "inbound"}),
        )
        .await,
    )
    .await;
    let refund_id = refund["item"].as_str().unwrap().to_string();
    let before_split = refund["position"].as_u64().unwrap();

    // Without a subject, the new ticket keeps the original's.
    let split = ok_json(
        app.post(
            &t("split"),
            &agent,
            json!({"message_ids": [refund_id], "body": "Split off the refund."}),
        )
        .await,
    )
    .await;
    let new_id = split["target"]["id"].as_str().unwrap().to_string();
    let new = ok_json(app.get(&format!("/api/v1/tickets/{new_id}"), &agent).await).await;
    assert_eq!(new["subject"], "Invoice missing");
    assert_eq!(new["split_from"], id);
    assert_eq!(new["requester"]["name"], "Dana");
    let moved = &new["messages"]["items"][0];
    assert_eq!(moved["id"], refund_id);
    assert_eq!(moved["moved_from"], id);
    assert_eq!(moved["body"], "Also, I want a refund.");
    assert_eq!(moved["author"]["kind"], "customer");
    assert_eq!(
        bodies(&new["messages"])[1..],
        [
            "Split off the refund.",
            format!("ticket was split from ticket {id}").as_str()
        ]
    );
    let source = ok_json(app.get(&format!("/api/v1/tickets/{id}"), &agent).await).await;
    assert_eq!(source["split_into"], json!([new_id]));
    assert!(!source.to_string().contains("I want a refund"));

    // Before the split, the message was on the source, and the new ticket
    // did not exist; the new ticket's past holds the moved message.
    let then = ok_json(
        app.get(
            &format!("/api/v1/tickets/{id}?at_position={before_split}"),
            &agent,
        )
        .await,
    )
    .await;
    assert_eq!(
        bodies(&then["messages"]),
        ["Where is my invoice?", "Also, I want a refund."]
    );
    assert_eq!(then["split_into"], json!([]));
    problem(
        app.get(
            &format!("/api/v1/tickets/{new_id}?at_position={before_split}"),
            &agent,
        )
        .await,
        404,
    )
    .await;
    let new_now_past = ok_json(
        app.get(
            &format!(
                "/api/v1/tickets/{new_id}?at_position={}",
                new["position"].as_u64().unwrap()
            ),
            &agent,
        )
        .await,
    )
    .await;
    assert_eq!(new_now_past["messages"]["items"], new["messages"]["items"]);

    // A merge moves nothing: the survivor links back and notes it.
    ok_json(
        app.post(
            &format!("/api/v1/tickets/{new_id}/merge"),
            &agent,
            json!({"into": id}),
        )
        .await,
    )
    .await;
    let survivor = ok_json(app.get(&format!("/api/v1/tickets/{id}"), &agent).await).await;
    assert_eq!(survivor["merged_from"], json!([new_id]));
    assert_eq!(
        bodies(&survivor["messages"]).last().copied(),
        Some(format!("ticket {new_id} was merged into this ticket").as_str())
    );
    let merged = ok_json(app.get(&format!("/api/v1/tickets/{new_id}"), &agent).await).await;
    assert_eq!(merged["merged_into"], id);
    assert_eq!(merged["messages"]["items"][0]["id"], refund_id);

    // Emptied, then rebuilt from the log: the same answers.
    let paths = [
        format!("/api/v1/tickets/{id}"),
        format!("/api/v1/tickets/{new_id}"),
        format!("/api/v1/tickets/{new_id}/messages"),
    ];
    let mut before = Vec::new();
    for p in &paths {
        before.push(ok_json(app.get(p, &agent).await).await);
    }
    let pool = app.store.db();
    ledgerdesk_tests::exec(&pool, "DELETE FROM conversation_items")
        .await
        .unwrap();
    ledgerdesk_tests::exec(&pool, "DELETE FROM ticket_links")
        .await
        .unwrap();
    let emptied = ok_json(app.get(&paths[2], &agent).await).await;
    assert_eq!(emptied["items"], json!([]), "the table was not emptied");
    let res = app
        .post(
            "/api/v1/admin/projections/conversation/rebuild",
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 202);
    for (p, expected) in paths.iter().zip(&before) {
        until_equal(&app, &agent, p, expected).await;
    }
    let status = ok_json(app.get("/api/v1/admin/projections", &app.admin).await).await;
    assert!(
        status["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "conversation"),
        "{status}"
    );
}

async fn min_position_is_accepted_on_every_read(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, auditor) = app.user("auditor").await;
    let id = open_ticket(&app, &app.admin).await;
    let written = ok_json(
        app.post(
            &format!("/api/v1/tickets/{id}/messages"),
            &app.admin,
            json!({"body": "Reply"}),
        )
        .await,
    )
    .await;
    let at = written["position"].as_u64().unwrap();
    for path in [
        format!("/api/v1/tickets/{id}"),
        format!("/api/v1/tickets/{id}/messages"),
        format!("/api/v1/tickets/{id}/history"),
        "/api/v1/tickets".to_string(),
        "/api/v1/audit".to_string(),
        "/api/v1/events".to_string(),
        format!("/api/v1/events/{at}/proof?tree_size={at}"),
        "/api/v1/audit/consistency?from=1".to_string(),
        "/api/v1/audit/checkpoints".to_string(),
    ] {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{path}{sep}min_position={at}");
        let body = ok_json(app.get(&url, &auditor).await).await;
        assert!(!body.is_null(), "{url}");
        let bad = format!("{path}{sep}min_position=x");
        let p = problem(app.get(&bad, &auditor).await, 400).await;
        assert_eq!(p["field"], "min_position", "{bad}: {p}");
    }
    // Waiting for the write: the reply is there.
    let page = ok_json(
        app.get(
            &format!("/api/v1/tickets/{id}/messages?min_position={at}"),
            &auditor,
        )
        .await,
    )
    .await;
    assert_eq!(bodies(&page), ["Where is my invoice?", "Reply"]);
    assert!(page["position"].as_u64().unwrap() >= at);
}

async fn a_due_date_is_set_and_cleared_and_shows_in_the_history(db: &TestDb) {
    let app = spawn_app(db).await;
    let (_, agent) = app.user("agent").await;
    let (_, auditor) = app.user("auditor").await;
    let id = open_ticket(&app, &agent).await;
    let path = format!("/api/v1/tickets/{id}/due-date");

    let set = app
        .post(&path, &agent, json!({"due_at": "2026-12-11T17:00:00Z"}))
        .await;
    assert_eq!(set.headers()["etag"], "\"2\"");
    assert_eq!(ok_json(set).await["version"], 2);
    let same = app
        .post(&path, &agent, json!({"due_at": "2026-12-11T17:00:00Z"}))
        .await;
    assert_eq!(problem(same, 422).await["code"], "no_change");
    let empty = app.post(&path, &agent, json!({})).await;
    assert_eq!(problem(empty, 400).await["field"], "due_at");
    let not_a_date = app.post(&path, &agent, json!({"due_at": "friday"})).await;
    assert_eq!(problem(not_a_date, 400).await["field"], "due_at");
    let by_auditor = app.post(&path, &auditor, json!({"due_at": null})).await;
    assert_eq!(by_auditor.status(), 403);
    let cleared = app.post(&path, &agent, json!({"due_at": null})).await;
    assert_eq!(ok_json(cleared).await["version"], 3);

    let history = ok_json(
        app.get(&format!("/api/v1/tickets/{id}/history"), &agent)
            .await,
    )
    .await;
    let due: Vec<(&str, &str, Value)> = items(&history)
        .iter()
        .filter(|e| e["event_type"] == "ticket.due_date_changed")
        .map(|e| {
            (
                e["label"].as_str().unwrap(),
                e["description"].as_str().unwrap(),
                e["changes"].clone(),
            )
        })
        .collect();
    assert_eq!(
        due,
        [
            (
                "Ticket – Due date",
                "Due date set to 2026-12-11T17:00:00Z",
                json!([{"field": "due_at", "before": null, "after": "2026-12-11T17:00:00Z"}])
            ),
            (
                "Ticket – Due date",
                "Due date cleared",
                json!([{"field": "due_at", "before": "2026-12-11T17:00:00Z", "after": null}])
            ),
        ]
    );
}
