//! The verifiable history over HTTP (`/api/v1/events`, proofs, the
//! checkpoint key, the audit), black-box on both backends. What the server
//! serves is checked with `ledgerdesk_store`'s own verification functions,
//! against checkpoints signed with the key file the server uses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ledgerdesk_store::hash::{HashedFields, GENESIS_HASH};
use ledgerdesk_store::merkle::{self, MerkleHash};
use ledgerdesk_store::{
    checkpoint_now, latest_checkpoint, Checkpoint, CheckpointKey, ConsistencyProof, EventStore,
    InclusionProof, PublicKey,
};
use ledgerdesk_tests::app::*;
use ledgerdesk_tests::{backend_tests, exec, Kind, TestDb};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LINK};
use serde_json::value::RawValue;
use serde_json::{json, Value};

backend_tests!(
    events_page_through_the_whole_log_once_in_order,
    events_as_cloudevents_and_as_a_batch,
    inclusion_proofs_verify_against_signed_checkpoints,
    consistency_proofs_verify_between_checkpoints,
    public_key_verifies_the_servers_checkpoints,
    checkpoints_are_listed_in_pages_and_verify,
    audit_is_ok_then_names_a_tampered_event,
    bad_parameters_are_400_problems,
    readers_may_read_and_agents_may_not,
);

/// The store as stored (sealed) — the server's `raw_store`, opened
/// separately — once the server's start-up checkpoint is signed, so no
/// checkpoint of the server's interleaves with the test's own.
async fn settled(db: &TestDb) -> Arc<dyn EventStore> {
    let raw = db.open().await;
    for _ in 0..500 {
        if latest_checkpoint(raw.as_ref()).await.unwrap().is_some() {
            return raw;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server signed no checkpoint at start");
}

/// The key the server signs with (the harness points it into `app.dir`).
fn server_key(app: &TestApp) -> CheckpointKey {
    CheckpointKey::load_or_create(&app.dir.join("checkpoint.key")).unwrap()
}

/// A new auditor's token.
async fn auditor(app: &TestApp) -> String {
    app.user("auditor").await.1
}

/// Some traffic: `n` tickets, each with a note.
async fn busy(app: &TestApp, n: usize) {
    for _ in 0..n {
        let id = app.ticket(&app.admin).await;
        ok_json(
            app.post(
                &format!("/api/v1/tickets/{id}/notes"),
                &app.admin,
                json!({"body": "checked"}),
            )
            .await,
        )
        .await;
    }
}

/// A checkpoint as served.
fn served_checkpoint(v: &Value) -> Checkpoint {
    serde_json::from_value(v.clone()).unwrap()
}

fn flip(h: &MerkleHash) -> MerkleHash {
    let mut b = h.0;
    b[7] ^= 0x01;
    MerkleHash(b)
}

type RawObject = HashMap<String, Box<RawValue>>;

fn text(o: &RawObject, key: &str) -> String {
    serde_json::from_str(o[key].get()).unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn num(o: &RawObject, key: &str) -> u64 {
    serde_json::from_str(o[key].get()).unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Recompute an event's chain hash from what was served.
#[allow(clippy::too_many_arguments)]
fn chain_hash(
    position: u64,
    stream_id: &str,
    stream_type: &str,
    version: u64,
    event_id: &str,
    event_type: &str,
    schema_version: u32,
    payload: &str,
    metadata: &str,
    recorded_at: &str,
    prev: &str,
) -> String {
    let at = chrono::DateTime::parse_from_rfc3339(recorded_at).unwrap();
    HashedFields {
        position,
        stream_id,
        stream_type,
        version,
        event_id,
        event_type,
        schema_version,
        payload,
        metadata,
        recorded_at_us: at.timestamp_micros(),
    }
    .chain_hash(prev)
}

async fn get_raw(app: &TestApp, path: &str, token: &str) -> (reqwest::header::HeaderMap, String) {
    let res = app.get(path, token).await;
    assert_eq!(res.status(), 200, "{path}");
    let headers = res.headers().clone();
    (headers, res.text().await.unwrap())
}

async fn events_page_through_the_whole_log_once_in_order(db: &TestDb) {
    let app = spawn_app(db).await;
    let raw = settled(db).await;
    busy(&app, 10).await;
    let stored = raw.read_all(0, 100_000).await.unwrap();
    let head = stored.len() as u64;
    assert!(head > 20, "{head}");

    let mut served: Vec<RawObject> = Vec::new();
    let mut path = "/api/v1/events?limit=7".to_string();
    let mut pages = 0;
    loop {
        let (headers, body) = get_raw(&app, &path, &app.admin).await;
        let page: RawObject = serde_json::from_str(&body).unwrap();
        let items: Vec<RawObject> = serde_json::from_str(page["items"].get()).unwrap();
        pages += 1;
        match page.get("next_cursor") {
            Some(next) => {
                let next: String = serde_json::from_str(next.get()).unwrap();
                assert_eq!(items.len(), 7);
                // The same cursor in the body and in the Link.
                let link = headers[LINK].to_str().unwrap();
                path = format!("/api/v1/events?limit=7&cursor={next}");
                assert_eq!(link, format!("<{path}>; rel=\"next\""));
                served.extend(items);
            }
            None => {
                assert!(items.len() <= 7);
                assert!(!headers.contains_key(LINK));
                served.extend(items);
                break;
            }
        }
    }
    assert_eq!(pages as u64, head.div_ceil(7));

    // Every event exactly once, in order, as stored, each chained to the one
    // before — recomputed from the served bytes alone.
    let positions: Vec<u64> = served.iter().map(|o| num(o, "position")).collect();
    assert_eq!(positions, (1..=head).collect::<Vec<_>>());
    let mut prev = GENESIS_HASH.to_string();
    for (o, e) in served.iter().zip(&stored) {
        assert_eq!(text(o, "prev_hash"), prev, "position {}", e.position);
        assert_eq!(text(o, "hash"), e.hash);
        assert_eq!(o["payload"].get(), e.payload, "payload byte for byte");
        assert_eq!(o["metadata"].get(), e.metadata, "metadata byte for byte");
        let recomputed = chain_hash(
            num(o, "position"),
            &text(o, "stream_id"),
            &text(o, "stream_type"),
            num(o, "version"),
            &text(o, "event_id"),
            &text(o, "event_type"),
            num(o, "schema_version") as u32,
            o["payload"].get(),
            o["metadata"].get(),
            &text(o, "recorded_at"),
            &prev,
        );
        assert_eq!(recomputed, e.hash, "position {}", e.position);
        prev = e.hash.clone();
    }

    // Personal data stays sealed: the raw log, not the vault's view.
    let created = served
        .iter()
        .find(|o| text(o, "event_type") == "ticket.created")
        .unwrap();
    assert!(created["payload"].get().contains("sealed"));
    assert!(!created["payload"].get().contains("carol@customer.example"));

    // A page from the middle starts with the right prev_hash; past the head
    // is empty.
    let mid = ok_json(app.get("/api/v1/events?after=10&limit=2", &app.admin).await).await;
    assert_eq!(mid["items"][0]["position"], 11);
    assert_eq!(mid["items"][0]["prev_hash"], stored[9].hash.as_str());
    let next = mid["next_cursor"].as_str().unwrap();
    let after_mid = ok_json(
        app.get(&format!("/api/v1/events?limit=2&cursor={next}"), &app.admin)
            .await,
    )
    .await;
    assert_eq!(after_mid["items"][0]["position"], 13);
    let past = ok_json(
        app.get(&format!("/api/v1/events?after={}", head + 5), &app.admin)
            .await,
    )
    .await;
    assert_eq!(past["items"], json!([]));
    assert!(past.get("next_cursor").is_none());
    // The default page is 50 events, as on every list.
    let all = ok_json(app.get("/api/v1/events", &app.admin).await).await;
    assert_eq!(all["items"].as_array().unwrap().len() as u64, head.min(50));
}

fn assert_cloudevent(ce: &RawObject) {
    for attr in ["specversion", "id", "source", "type"] {
        assert!(ce.contains_key(attr), "required attribute {attr}");
    }
    assert_eq!(text(ce, "specversion"), "1.0");
    assert_eq!(text(ce, "datacontenttype"), "application/json");
    assert!(text(ce, "source").starts_with("/ledgerdesk/"));
    assert!(text(ce, "type").starts_with("dev.ledgerdesk."));
    assert!(!text(ce, "id").is_empty());
    chrono::DateTime::parse_from_rfc3339(&text(ce, "time")).unwrap();
    for name in ce.keys() {
        assert!(
            !name.is_empty()
                && name.len() <= 20
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "attribute name `{name}`"
        );
    }
}

async fn events_as_cloudevents_and_as_a_batch(db: &TestDb) {
    let app = spawn_app(db).await;
    let raw = settled(db).await;
    busy(&app, 2).await;
    let stored = raw.read_all(0, 100_000).await.unwrap();

    let (_, body) = get_raw(
        &app,
        "/api/v1/events?format=cloudevents&limit=500",
        &app.admin,
    )
    .await;
    let page: RawObject = serde_json::from_str(&body).unwrap();
    let items: Vec<RawObject> = serde_json::from_str(page["items"].get()).unwrap();
    assert!(stored.len() < 500, "one page holds the whole log");
    assert_eq!(items.len(), stored.len());
    let mut prev = GENESIS_HASH.to_string();
    for (ce, e) in items.iter().zip(&stored) {
        assert_cloudevent(ce);
        assert_eq!(text(ce, "id"), e.event_id.to_string());
        assert_eq!(text(ce, "type"), format!("dev.ledgerdesk.{}", e.event_type));
        assert_eq!(
            text(ce, "source"),
            format!("/ledgerdesk/{}/{}", e.stream_type, e.stream_id)
        );
        assert_eq!(text(ce, "subject"), e.stream_id);
        assert_eq!(num(ce, "ledgerposition"), e.position);
        assert_eq!(text(ce, "ledgerhash"), e.hash);
        assert_eq!(text(ce, "ledgerprevhash"), prev);
        assert_eq!(ce["data"].get(), e.payload);
        // Everything hashed is there: the chain recomputes from the
        // CloudEvent alone.
        let recomputed = chain_hash(
            num(ce, "ledgerposition"),
            &text(ce, "subject"),
            &text(ce, "ledgerstreamtype"),
            num(ce, "ledgerversion"),
            &text(ce, "id"),
            text(ce, "type").strip_prefix("dev.ledgerdesk.").unwrap(),
            num(ce, "ledgerschemaversion") as u32,
            ce["data"].get(),
            &text(ce, "ledgermetadata"),
            &text(ce, "time"),
            &prev,
        );
        assert_eq!(recomputed, e.hash);
        prev = e.hash.clone();
    }
    // The admin's own actions carry the actor.
    let me = ok_json(app.get("/api/v1/me", &app.admin).await).await;
    assert!(items.iter().any(|ce| ce
        .get("ledgeractor")
        .is_some_and(|a| a.get() == format!("\"{}\"", me["id"].as_str().unwrap()))));

    // Accept: the CloudEvents batch media type → a bare array of that type.
    let res = app
        .client
        .get(app.url("/api/v1/events?limit=5"))
        .bearer_auth(&app.admin)
        .header(ACCEPT, "application/cloudevents-batch+json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()[CONTENT_TYPE],
        "application/cloudevents-batch+json"
    );
    // No body to carry a cursor: the Link alone names the next page.
    let link = res.headers()[LINK].to_str().unwrap().to_string();
    let next = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .unwrap();
    assert!(next.starts_with("/api/v1/events?limit=5&cursor="), "{link}");
    let batch: Vec<RawObject> = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    let following = ok_json(app.get(next, &app.admin).await).await;
    assert_eq!(following["items"][0]["position"], 6);
    assert_eq!(batch.len(), 5);
    for (ce, e) in batch.iter().zip(&stored) {
        assert_cloudevent(ce);
        assert_eq!(text(ce, "id"), e.event_id.to_string());
    }
    // format=ledger cannot be a CloudEvents batch.
    let res = app
        .client
        .get(app.url("/api/v1/events?format=ledger"))
        .bearer_auth(&app.admin)
        .header(ACCEPT, "application/cloudevents-batch+json")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(res, 400).await["field"], "format");
}

async fn inclusion_proofs_verify_against_signed_checkpoints(db: &TestDb) {
    let app = spawn_app(db).await;
    let raw = settled(db).await;
    let key = server_key(&app);
    let pk = key.public_key();
    let auditor = auditor(&app).await;
    busy(&app, 5).await;
    let first = checkpoint_now(raw.as_ref(), &key).await.unwrap();
    busy(&app, 3).await;
    let latest = checkpoint_now(raw.as_ref(), &key).await.unwrap();
    let stored = raw.read_all(0, 100_000).await.unwrap();
    let leaves: Vec<MerkleHash> = stored.iter().map(merkle::event_leaf_hash).collect();
    assert_eq!(latest.tree_size, stored.len() as u64);

    // Without tree_size: the latest checkpoint's tree, with the checkpoint.
    let n = latest.tree_size;
    for position in [1, 2, n / 2, n - 1, n] {
        let body = ok_json(
            app.get(&format!("/api/v1/events/{position}/proof"), &auditor)
                .await,
        )
        .await;
        assert_eq!(body["tree_size"], n);
        assert_eq!(body["leaf_index"], position - 1);
        let cp = served_checkpoint(&body["checkpoint"]);
        assert_eq!(cp, latest);
        cp.verify(&pk).unwrap();
        let proof: InclusionProof = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(proof.leaf_hash, leaves[position as usize - 1]);
        proof.verify(&cp.root_hash).unwrap();

        // Mutated copies are rejected.
        let mut bad = proof.clone();
        bad.audit_path.pop();
        assert!(bad.verify(&cp.root_hash).is_err(), "truncated path");
        if proof.audit_path.len() >= 2 {
            let mut bad = proof.clone();
            bad.audit_path.swap(0, 1);
            assert!(bad.verify(&cp.root_hash).is_err(), "reordered path");
        }
        let mut bad = proof.clone();
        bad.leaf_index = (position) % n;
        bad.position = bad.leaf_index + 1;
        assert!(bad.verify(&cp.root_hash).is_err(), "wrong index");
        let mut bad = proof.clone();
        bad.leaf_index += 1;
        assert!(bad.verify(&cp.root_hash).is_err(), "index not position − 1");
        let mut bad = proof.clone();
        bad.audit_path[0] = flip(&bad.audit_path[0]);
        assert!(bad.verify(&cp.root_hash).is_err(), "flipped path byte");
        let mut bad = proof.clone();
        bad.leaf_hash = flip(&bad.leaf_hash);
        assert!(bad.verify(&cp.root_hash).is_err(), "flipped leaf byte");
        assert!(proof.verify(&flip(&cp.root_hash)).is_err(), "another root");
    }

    // An older signed tree, by its size.
    let body = ok_json(
        app.get(
            &format!("/api/v1/events/3/proof?tree_size={}", first.tree_size),
            &app.admin,
        )
        .await,
    )
    .await;
    assert_eq!(served_checkpoint(&body["checkpoint"]), first);
    let proof: InclusionProof = serde_json::from_value(body).unwrap();
    proof.verify(&first.root_hash).unwrap();
    assert!(proof.verify(&latest.root_hash).is_err());

    // A tree nobody signed: no checkpoint, still a true proof.
    let size = first.tree_size + 1;
    let body = ok_json(
        app.get(
            &format!("/api/v1/events/{size}/proof?tree_size={size}"),
            &app.admin,
        )
        .await,
    )
    .await;
    assert_eq!(body["checkpoint"], Value::Null);
    let proof: InclusionProof = serde_json::from_value(body).unwrap();
    proof
        .verify(&merkle::root_of(&leaves[..size as usize]))
        .unwrap();

    // An event newer than the latest checkpoint has no signed proof yet.
    busy(&app, 1).await;
    let newest = app.head().await;
    let p = problem(
        app.get(&format!("/api/v1/events/{newest}/proof"), &app.admin)
            .await,
        404,
    )
    .await;
    assert_eq!(p["code"], "not_covered");
    // … unless the caller names the tree.
    let body = ok_json(
        app.get(
            &format!("/api/v1/events/{newest}/proof?tree_size={newest}"),
            &app.admin,
        )
        .await,
    )
    .await;
    assert_eq!(body["tree_size"], newest);
}

async fn consistency_proofs_verify_between_checkpoints(db: &TestDb) {
    let app = spawn_app(db).await;
    let raw = settled(db).await;
    let key = server_key(&app);
    let start = latest_checkpoint(raw.as_ref()).await.unwrap().unwrap();
    busy(&app, 4).await;
    let first = checkpoint_now(raw.as_ref(), &key).await.unwrap();
    busy(&app, 5).await;
    let second = checkpoint_now(raw.as_ref(), &key).await.unwrap();
    assert!(start.tree_size < first.tree_size && first.tree_size < second.tree_size);

    // `to` defaults to the latest checkpoint.
    let body = ok_json(
        app.get(
            &format!("/api/v1/audit/consistency?from={}", first.tree_size),
            &app.admin,
        )
        .await,
    )
    .await;
    assert_eq!(body["second"], second.tree_size);
    assert_eq!(served_checkpoint(&body["first_checkpoint"]), first);
    assert_eq!(served_checkpoint(&body["second_checkpoint"]), second);
    let proof: ConsistencyProof = serde_json::from_value(body).unwrap();
    proof.verify(&first.root_hash, &second.root_hash).unwrap();
    assert!(!proof.proof.is_empty());

    // Forgeries fail.
    let mut bad = proof.clone();
    bad.proof[0] = flip(&bad.proof[0]);
    assert!(bad.verify(&first.root_hash, &second.root_hash).is_err());
    let mut bad = proof.clone();
    bad.proof.pop();
    assert!(bad.verify(&first.root_hash, &second.root_hash).is_err());
    let mut bad = proof.clone();
    bad.proof.push(second.root_hash);
    assert!(bad.verify(&first.root_hash, &second.root_hash).is_err());
    let mut bad = proof.clone();
    bad.first += 1;
    assert!(bad.verify(&first.root_hash, &second.root_hash).is_err());
    assert!(proof
        .verify(&flip(&first.root_hash), &second.root_hash)
        .is_err());
    assert!(proof
        .verify(&first.root_hash, &flip(&second.root_hash))
        .is_err());
    assert!(proof.verify(&second.root_hash, &first.root_hash).is_err());

    // From the server's own start-up checkpoint, both named.
    let body = ok_json(
        app.get(
            &format!(
                "/api/v1/audit/consistency?from={}&to={}",
                start.tree_size, second.tree_size
            ),
            &app.admin,
        )
        .await,
    )
    .await;
    assert_eq!(served_checkpoint(&body["first_checkpoint"]), start);
    let proof: ConsistencyProof = serde_json::from_value(body).unwrap();
    proof.verify(&start.root_hash, &second.root_hash).unwrap();

    // The edges: from 0 and from = to.
    for (from, to) in [(0, second.tree_size), (second.tree_size, second.tree_size)] {
        let body = ok_json(
            app.get(
                &format!("/api/v1/audit/consistency?from={from}&to={to}"),
                &app.admin,
            )
            .await,
        )
        .await;
        let proof: ConsistencyProof = serde_json::from_value(body).unwrap();
        assert_eq!(proof.second_root, second.root_hash);
        proof.verify(&proof.first_root, &second.root_hash).unwrap();
    }
    // A size nobody signed still gets both roots, and no checkpoint.
    let body = ok_json(
        app.get(
            &format!(
                "/api/v1/audit/consistency?from={}&to={}",
                first.tree_size + 1,
                second.tree_size
            ),
            &app.admin,
        )
        .await,
    )
    .await;
    assert_eq!(body["first_checkpoint"], Value::Null);
    let leaves: Vec<MerkleHash> = raw
        .read_all(0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(merkle::event_leaf_hash)
        .collect();
    let proof: ConsistencyProof = serde_json::from_value(body).unwrap();
    let root = merkle::root_of(&leaves[..first.tree_size as usize + 1]);
    assert_eq!(proof.first_root, root);
    proof.verify(&root, &second.root_hash).unwrap();
}

async fn public_key_verifies_the_servers_checkpoints(db: &TestDb) {
    let app = spawn_app(db).await;
    let raw = settled(db).await;
    let body = ok_json(app.get("/api/v1/audit/public-key", &app.admin).await).await;
    assert_eq!(body["algorithm"], "ed25519");
    assert_eq!(body["checkpoint_format"], "ledgerdesk-checkpoint-v1");
    let pk = PublicKey::parse(body["public_key"].as_str().unwrap()).unwrap();
    assert_eq!(
        PublicKey::parse(body["public_key_hex"].as_str().unwrap()).unwrap(),
        pk
    );
    assert_eq!(body["key_id"], pk.key_id());

    // The checkpoint the server signed by itself at start verifies with it.
    let at_start = latest_checkpoint(raw.as_ref()).await.unwrap().unwrap();
    assert_eq!(at_start.key_id, pk.key_id());
    at_start.verify(&pk).unwrap();
    // So does one signed later with the key file, and it is the one a proof
    // names.
    busy(&app, 1).await;
    let cp = checkpoint_now(raw.as_ref(), &server_key(&app))
        .await
        .unwrap();
    let proof = ok_json(app.get("/api/v1/events/1/proof", &app.admin).await).await;
    served_checkpoint(&proof["checkpoint"]).verify(&pk).unwrap();
    cp.verify(&pk).unwrap();
    // Another key's checkpoint does not.
    let other = CheckpointKey::from_seed([7; 32]).sign(cp.tree_size, cp.root_hash, cp.signed_at);
    assert!(other.verify(&pk).is_err());
    let mut forged = cp.clone();
    forged.tree_size += 1;
    assert!(forged.verify(&pk).is_err());
}

async fn audit_is_ok_then_names_a_tampered_event(db: &TestDb) {
    let app = spawn_app(db).await;
    let raw = settled(db).await;
    let auditor = auditor(&app).await;
    busy(&app, 3).await;
    checkpoint_now(raw.as_ref(), &server_key(&app))
        .await
        .unwrap();
    let head = app.head().await;

    let report = ok_json(app.get("/api/v1/admin/verify", &app.admin).await).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events"], head);
    assert_eq!(report["verified"], head);
    assert_eq!(report["first_bad_position"], Value::Null);
    assert_eq!(report["findings"], json!([]));
    assert!(report["checkpoints_checked"].as_u64().unwrap() >= 2);
    assert_eq!(report["latest_checkpoint"]["tree_size"], head);

    // Someone with database access edits event 5.
    let unguard = match db.kind() {
        Kind::Sqlite => "DROP TRIGGER events_reject_update; DROP TRIGGER events_reject_delete;",
        Kind::Postgres => "ALTER TABLE events DISABLE TRIGGER USER;",
    };
    exec(&raw.db(), unguard).await.unwrap();
    exec(
        &raw.db(),
        "UPDATE events SET payload = '{\"n\":999}' WHERE position = 5",
    )
    .await
    .unwrap();

    let res = app.get("/api/v1/admin/verify", &auditor).await;
    let report = ok_json(res).await;
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_position"], 5);
    assert_eq!(report["verified"], 4);
    let findings: Vec<String> = serde_json::from_value(report["findings"].clone()).unwrap();
    assert!(
        findings.iter().any(|f| f.contains("position 5")),
        "{findings:?}"
    );
    assert!(report["first_bad_checkpoint"].is_object(), "{report}");
}

async fn checkpoints_are_listed_in_pages_and_verify(db: &TestDb) {
    let app = spawn_app(db).await;
    let raw = settled(db).await;
    let key = server_key(&app);
    for n in 1..=4 {
        busy(&app, n).await;
        checkpoint_now(raw.as_ref(), &key).await.unwrap();
    }
    let stored = ledgerdesk_store::checkpoint::checkpoints(raw.as_ref(), Default::default())
        .await
        .unwrap();
    assert_eq!(stored.len(), 5, "the start-up one and four");
    let pk = key.public_key();

    // Two a page, oldest first, each page naming the next.
    let mut served = Vec::new();
    let mut path = "/api/v1/audit/checkpoints?limit=2".to_string();
    loop {
        let res = app.get(&path, &app.admin).await;
        let link = res
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_string());
        let body = ok_json(res).await;
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        served.extend(items.iter().map(served_checkpoint));
        match body["next_cursor"].as_str() {
            Some(next) => {
                let link = link.expect("a Link header with the next page");
                path = format!("/api/v1/audit/checkpoints?limit=2&cursor={next}");
                assert_eq!(link, format!("<{path}>; rel=\"next\""));
            }
            None => {
                assert!(link.is_none());
                break;
            }
        }
    }
    assert_eq!(served, stored);
    for cp in &served {
        cp.verify(&pk).unwrap();
    }
    // A time frame selects by signing time, both ends included.
    let since = served[2].signed_at;
    let until = served[3].signed_at;
    let body = ok_json(
        app.get(
            &format!(
                "/api/v1/audit/checkpoints?since={}&until={}",
                enc(&since.to_rfc3339()),
                enc(&until.to_rfc3339())
            ),
            &app.admin,
        )
        .await,
    )
    .await;
    let framed: Vec<Checkpoint> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(served_checkpoint)
        .collect();
    assert_eq!(framed, served[2..4].to_vec());
    assert!(body.get("next_cursor").is_none());
}

async fn bad_parameters_are_400_problems(db: &TestDb) {
    let app = spawn_app(db).await;
    let raw = settled(db).await;
    busy(&app, 1).await;
    checkpoint_now(raw.as_ref(), &server_key(&app))
        .await
        .unwrap();
    let head = app.head().await;
    let beyond = head + 1000;
    let cases: Vec<(String, u16, &str)> = vec![
        ("/api/v1/events?after=x".into(), 400, "after"),
        ("/api/v1/events?after=-1".into(), 400, "after"),
        ("/api/v1/events?limit=0".into(), 400, "limit"),
        ("/api/v1/events?limit=501".into(), 400, "limit"),
        ("/api/v1/events?cursor=x".into(), 400, "cursor"),
        // A cursor of another list is not one of this list.
        (
            format!("/api/v1/events?cursor={}", "Y2hlY2twb2ludHM6MQ"),
            400,
            "cursor",
        ),
        (
            "/api/v1/events?cursor=ZXZlbnRzOjE&after=1".into(),
            400,
            "cursor",
        ),
        ("/api/v1/events?limit=ten".into(), 400, "limit"),
        ("/api/v1/events?format=xml".into(), 400, "format"),
        ("/api/v1/events/abc/proof".into(), 400, "position"),
        ("/api/v1/events/0/proof".into(), 400, "position"),
        (
            "/api/v1/events/1/proof?tree_size=x".into(),
            400,
            "tree_size",
        ),
        (
            format!("/api/v1/events/1/proof?tree_size={beyond}"),
            400,
            "tree_size",
        ),
        (
            "/api/v1/events/3/proof?tree_size=2".into(),
            400,
            "tree_size",
        ),
        (
            "/api/v1/events/1/proof?tree_size=0".into(),
            400,
            "tree_size",
        ),
        ("/api/v1/audit/consistency".into(), 400, "from"),
        ("/api/v1/audit/consistency?from=x".into(), 400, "from"),
        ("/api/v1/audit/consistency?from=3&to=2".into(), 400, "from"),
        (
            format!("/api/v1/audit/consistency?from={beyond}"),
            400,
            "from",
        ),
        (
            format!("/api/v1/audit/consistency?from=1&to={beyond}"),
            400,
            "to",
        ),
        ("/api/v1/audit/consistency?from=1&to=-2".into(), 400, "to"),
        ("/api/v1/audit/checkpoints?after=x".into(), 400, "after"),
        ("/api/v1/audit/checkpoints?limit=0".into(), 400, "limit"),
        (
            "/api/v1/audit/checkpoints?since=yesterday".into(),
            400,
            "since",
        ),
        (
            "/api/v1/audit/checkpoints?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z"
                .into(),
            400,
            "since",
        ),
    ];
    for (path, status, field) in cases {
        let p = problem(app.get(&path, &app.admin).await, status).await;
        assert_eq!(p["field"], field, "{path}: {p}");
    }
    // Unknown parameters are refused too.
    problem(app.get("/api/v1/events?afterr=1", &app.admin).await, 400).await;
    problem(
        app.get("/api/v1/audit/consistency?from=1&first=1", &app.admin)
            .await,
        400,
    )
    .await;
    // A position the log does not hold is not found.
    let p = problem(
        app.get(&format!("/api/v1/events/{beyond}/proof"), &app.admin)
            .await,
        404,
    )
    .await;
    assert_eq!(p["code"], "event_not_found");
    assert_eq!(app.head().await, head, "reading wrote nothing");
}

async fn readers_may_read_and_agents_may_not(db: &TestDb) {
    let app = spawn_app(db).await;
    settled(db).await;
    let (_, agent) = app.user("agent").await;
    let auditor = auditor(&app).await;
    let paths = [
        "/api/v1/events",
        "/api/v1/events?format=cloudevents",
        "/api/v1/events/1/proof",
        "/api/v1/audit/consistency?from=1",
        "/api/v1/audit/checkpoints",
        "/api/v1/audit/public-key",
        "/api/v1/admin/verify",
    ];
    for path in paths {
        ok_json(app.get(path, &auditor).await).await;
        ok_json(app.get(path, &app.admin).await).await;
        problem(app.get(path, &agent).await, 403).await;
        problem(app.send(reqwest::Method::GET, path, None, None).await, 401).await;
    }
}
