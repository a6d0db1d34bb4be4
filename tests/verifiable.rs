//! Verifiable history on both backends: the stored Merkle tree, signed
//! checkpoints, proofs served from the database, the full audit, and
//! evidence bundles.

use std::sync::Arc;
use std::time::Duration;

use ledgerdesk_store::bundle::BundleEvent;
use ledgerdesk_store::checkpoint::{CheckpointProblem, CheckpointRange};
use ledgerdesk_store::hash::HashedFields;
use ledgerdesk_store::merkle::{self, MerkleHash};
use ledgerdesk_store::verify::BreakReason;
use ledgerdesk_store::{
    checkpoint_now, checkpoints, consistency_proof, export_bundle, inclusion_proof,
    latest_checkpoint, sync_leaves, tree_root, verify_all, verify_bundle, AuditError, Checkpoint,
    CheckpointKey, Checkpointer, EventStore, ExpectedVersion, Metadata, NewEvent,
};
use ledgerdesk_tests::{backend_tests, exec, Kind, TestDb};
use serde_json::json;

backend_tests!(
    proofs_from_the_database_verify_against_checkpoints,
    concurrent_syncs_agree,
    audit_of_an_untouched_log_is_ok,
    audit_names_an_edited_event,
    audit_catches_a_rewrite_with_recomputed_chain,
    audit_catches_a_truncated_tail,
    audit_names_a_forged_checkpoint,
    checkpoints_table_is_append_only,
    no_checkpoint_follows_a_larger_one,
    checkpoints_on_a_timer_even_when_quiet,
    checkpoints_after_every_n_events,
    bundles_verify_and_name_tampering,
);

fn key() -> CheckpointKey {
    CheckpointKey::from_seed([42; 32])
}

fn ev(n: u64) -> NewEvent {
    NewEvent::new(
        "test.happened",
        1,
        json!({ "n": n, "text": "y".repeat(30) }),
        Metadata::system(),
    )
}

/// Append `count` events spread over a few streams, in batches of `batch`.
async fn append(store: &dyn EventStore, count: u64, batch: u64) {
    let mut n = 0;
    while n < count {
        let k = batch.min(count - n);
        let stream = format!("test-{}", n % 7);
        store
            .append(&stream, ExpectedVersion::Any, (n..n + k).map(ev).collect())
            .await
            .expect("append");
        n += k;
    }
}

/// All leaf hashes, computed from the events (the reference).
async fn leaves(store: &dyn EventStore) -> Vec<MerkleHash> {
    store
        .read_all(0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(merkle::event_leaf_hash)
        .collect()
}

async fn unguard_events(db: &TestDb, store: &dyn EventStore) {
    let sql = match db.kind() {
        Kind::Sqlite => "DROP TRIGGER events_reject_update; DROP TRIGGER events_reject_delete;",
        Kind::Postgres => "ALTER TABLE events DISABLE TRIGGER USER;",
    };
    exec(&store.db(), sql).await.unwrap();
}

async fn proofs_from_the_database_verify_against_checkpoints(db: &TestDb) {
    let store = db.open().await;
    let store = store.as_ref();
    let key = key();
    let pk = key.public_key();
    let mut cps: Vec<Checkpoint> = Vec::new();
    for (count, batch) in [(1, 1), (63, 9), (64, 64), (100, 17), (77, 50)] {
        append(store, count, batch).await;
        cps.push(checkpoint_now(store, &key).await.unwrap());
    }
    let all = leaves(store).await;
    assert_eq!(all.len(), 305);
    let sizes: Vec<u64> = cps.iter().map(|c| c.tree_size).collect();
    assert_eq!(sizes, [1, 64, 128, 228, 305]);

    for cp in &cps {
        cp.verify(&pk).unwrap();
        let n = cp.tree_size as usize;
        assert_eq!(cp.root_hash, merkle::root_of(&all[..n]), "root at {n}");
        assert_eq!(tree_root(store, cp.tree_size).await.unwrap(), cp.root_hash);
        let positions: Vec<u64> = if n <= 64 {
            (1..=n as u64).collect()
        } else {
            vec![
                1,
                2,
                63,
                64,
                65,
                127,
                128,
                129,
                n as u64 / 2,
                n as u64 - 1,
                n as u64,
            ]
        };
        for p in positions.into_iter().filter(|p| *p <= n as u64) {
            let proof = inclusion_proof(store, p, cp.tree_size).await.unwrap();
            assert_eq!(proof.leaf_hash, all[p as usize - 1]);
            proof.verify(&cp.root_hash).unwrap();
            // Not against another checkpoint's root.
            if n > 1 {
                assert!(proof.verify(&cps[0].root_hash).is_err() || cp.tree_size == 1);
            }
        }
    }
    for (i, a) in cps.iter().enumerate() {
        for b in &cps[i..] {
            let proof = consistency_proof(store, a.tree_size, b.tree_size)
                .await
                .unwrap();
            proof.verify(&a.root_hash, &b.root_hash).unwrap();
            if a.tree_size != b.tree_size {
                assert!(proof.verify(&b.root_hash, &a.root_hash).is_err());
            }
        }
    }
    // Every tree size, not only the signed ones.
    for n in [0u64, 2, 3, 5, 100, 200, 255, 256, 257, 304] {
        assert_eq!(
            tree_root(store, n).await.unwrap(),
            merkle::root_of(&all[..n as usize])
        );
    }
    // Beyond the log, or position 0.
    assert!(matches!(
        tree_root(store, 306).await,
        Err(AuditError::OutOfRange(_))
    ));
    assert!(inclusion_proof(store, 0, 10).await.is_err());
    assert!(inclusion_proof(store, 11, 10).await.is_err());
    assert!(consistency_proof(store, 11, 10).await.is_err());
}

async fn concurrent_syncs_agree(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    append(a.as_ref(), 250, 25).await;
    let (x, y) = tokio::join!(sync_leaves(a.as_ref()), sync_leaves(b.as_ref()));
    assert_eq!((x.unwrap(), y.unwrap()), (250, 250));
    append(a.as_ref(), 50, 10).await;
    assert_eq!(sync_leaves(b.as_ref()).await.unwrap(), 300);
    assert_eq!(sync_leaves(b.as_ref()).await.unwrap(), 300);
    let all = leaves(a.as_ref()).await;
    assert_eq!(
        tree_root(a.as_ref(), 300).await.unwrap(),
        merkle::root_of(&all)
    );
}

async fn audit_of_an_untouched_log_is_ok(db: &TestDb) {
    let store = db.open().await;
    let store = store.as_ref();
    let key = key();
    // Empty log: a checkpoint of the empty tree.
    let empty = checkpoint_now(store, &key).await.unwrap();
    assert_eq!(
        (empty.tree_size, empty.root_hash),
        (0, merkle::empty_root())
    );
    append(store, 120, 40).await;
    checkpoint_now(store, &key).await.unwrap();
    append(store, 30, 30).await;
    checkpoint_now(store, &key).await.unwrap();
    append(store, 5, 5).await; // not yet synced nor signed
    let report = verify_all(store, &key.public_key()).await.unwrap();
    assert!(report.ok(), "{:?}", report.findings());
    assert_eq!(report.events, 155);
    assert_eq!(report.chain.verified, 155);
    assert_eq!(report.leaves_checked, 150);
    assert_eq!(report.checkpoints_checked, 3);
    assert_eq!(report.latest_checkpoint.unwrap().tree_size, 150);
    // Another key is not trusted.
    let other = CheckpointKey::from_seed([1; 32]).public_key();
    let report = verify_all(store, &other).await.unwrap();
    let bad = report.first_bad_checkpoint.expect("wrong key reported");
    assert_eq!(bad.seq, 1);
    assert!(matches!(
        bad.problem,
        CheckpointProblem::BadSignature { .. }
    ));
}

async fn audit_names_an_edited_event(db: &TestDb) {
    let store = db.open().await;
    let store = store.as_ref();
    let key = key();
    append(store, 40, 10).await;
    checkpoint_now(store, &key).await.unwrap();
    unguard_events(db, store).await;
    exec(
        &store.db(),
        "UPDATE events SET payload = '{\"n\":999}' WHERE position = 17",
    )
    .await
    .unwrap();
    let report = verify_all(store, &key.public_key()).await.unwrap();
    assert!(!report.ok());
    let b = report.chain.first_break.clone().unwrap();
    assert_eq!(b.position, 17);
    assert!(matches!(b.reason, BreakReason::HashMismatch { .. }));
    assert_eq!(report.first_bad_leaf, Some(17));
    let cp = report.first_bad_checkpoint.clone().unwrap();
    assert!(matches!(cp.problem, CheckpointProblem::RootMismatch { .. }));
    assert!(report.findings().len() == 3, "{:?}", report.findings());
}

/// The attack the chain alone misses: edit an event and recompute every
/// later chain hash. The stored leaves and the signed roots still catch it.
async fn audit_catches_a_rewrite_with_recomputed_chain(db: &TestDb) {
    let store = db.open().await;
    let store = store.as_ref();
    let key = key();
    append(store, 30, 10).await;
    let cp = checkpoint_now(store, &key).await.unwrap();
    unguard_events(db, store).await;
    let events = store.read_all(0, 100).await.unwrap();
    let mut prev = events[9].hash.clone();
    let mut sql = String::new();
    for e in &events[10..] {
        let payload = if e.position == 11 {
            "{\"n\":-1}".to_owned()
        } else {
            e.payload.clone()
        };
        let id = e.event_id.hyphenated().to_string();
        let hash = HashedFields {
            position: e.position,
            stream_id: &e.stream_id,
            stream_type: &e.stream_type,
            version: e.version,
            event_id: &id,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            payload: &payload,
            metadata: &e.metadata,
            recorded_at_us: e.recorded_at.timestamp_micros(),
        }
        .chain_hash(&prev);
        sql.push_str(&format!(
            "UPDATE events SET payload = '{payload}', hash = '{hash}' WHERE position = {};",
            e.position
        ));
        prev = hash;
    }
    exec(&store.db(), &sql).await.unwrap();
    let report = verify_all(store, &key.public_key()).await.unwrap();
    assert!(report.chain.ok(), "the chain was recomputed");
    assert_eq!(report.first_bad_leaf, Some(11));
    let bad = report.first_bad_checkpoint.unwrap();
    assert_eq!((bad.seq, bad.tree_size), (cp.seq, 30));
    assert!(matches!(
        bad.problem,
        CheckpointProblem::RootMismatch { .. }
    ));
}

/// Removing the newest events leaves a valid chain; the checkpoint that
/// covered them does not.
async fn audit_catches_a_truncated_tail(db: &TestDb) {
    let store = db.open().await;
    let store = store.as_ref();
    let key = key();
    append(store, 50, 25).await;
    checkpoint_now(store, &key).await.unwrap();
    unguard_events(db, store).await;
    exec(&store.db(), "DELETE FROM events WHERE position > 45")
        .await
        .unwrap();
    let report = verify_all(store, &key.public_key()).await.unwrap();
    assert!(report.chain.ok());
    assert_eq!(report.first_bad_leaf, Some(46));
    let bad = report.first_bad_checkpoint.unwrap();
    assert_eq!(bad.problem, CheckpointProblem::BeyondLog { events: 45 });
}

async fn audit_names_a_forged_checkpoint(db: &TestDb) {
    let store = db.open().await;
    let store = store.as_ref();
    let key = key();
    append(store, 20, 10).await;
    checkpoint_now(store, &key).await.unwrap();
    append(store, 20, 10).await;
    let second = checkpoint_now(store, &key).await.unwrap();
    let unguard = match db.kind() {
        Kind::Sqlite => "DROP TRIGGER checkpoints_reject_update;",
        Kind::Postgres => "ALTER TABLE checkpoints DISABLE TRIGGER USER;",
    };
    exec(&store.db(), unguard).await.unwrap();
    exec(
        &store.db(),
        &format!(
            "UPDATE checkpoints SET tree_size = 39 WHERE seq = {}",
            second.seq
        ),
    )
    .await
    .unwrap();
    let report = verify_all(store, &key.public_key()).await.unwrap();
    let bad = report.first_bad_checkpoint.unwrap();
    assert_eq!((bad.seq, bad.tree_size), (second.seq, 39));
    assert!(matches!(
        bad.problem,
        CheckpointProblem::BadSignature { .. }
    ));
    assert!(report.chain.ok() && report.first_bad_leaf.is_none());
}

async fn checkpoints_table_is_append_only(db: &TestDb) {
    let store = db.open().await;
    let store = store.as_ref();
    append(store, 3, 3).await;
    checkpoint_now(store, &key()).await.unwrap();
    let pool = store.db();
    for sql in [
        "UPDATE checkpoints SET tree_size = 2",
        "DELETE FROM checkpoints",
        "UPDATE merkle_nodes SET hash = 'x'",
        "DELETE FROM merkle_nodes",
    ] {
        let err = exec(&pool, sql).await.expect_err(sql).to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    if db.kind() == Kind::Postgres {
        assert!(exec(&pool, "TRUNCATE checkpoints").await.is_err());
    }
    assert_eq!(
        latest_checkpoint(store).await.unwrap().unwrap().tree_size,
        3
    );
}

/// A signer that synced before a larger tree was signed (a CLI beside the
/// server) must not store its smaller tree after it: the audit would report
/// the tree shrinking, for ever, in an append-only table.
async fn no_checkpoint_follows_a_larger_one(db: &TestDb) {
    let store = db.open().await;
    let store = store.as_ref();
    append(store, 10, 5).await;
    let first = checkpoint_now(store, &key()).await.unwrap();
    assert_eq!(first.tree_size, 10);
    // A checkpoint of 20 events stands in for one signed by a process that
    // had seen more of the log than this one has synced.
    let larger = key().sign(20, first.root_hash, chrono::Utc::now());
    exec(
        &store.db(),
        &format!(
            "INSERT INTO checkpoints (tree_size, root_hash, signed_at, key_id, signature) \
             VALUES (20, '{}', {}, '{}', '{}')",
            larger.root_hash.to_hex(),
            larger.signed_at.timestamp_micros(),
            larger.key_id,
            larger.signature
        ),
    )
    .await
    .unwrap();
    assert!(matches!(
        checkpoint_now(store, &key()).await,
        Err(AuditError::Busy)
    ));
    assert_eq!(signed_sizes(store).await, vec![10, 20]);
    // Once the log holds as much, signing goes on.
    append(store, 10, 5).await;
    assert_eq!(checkpoint_now(store, &key()).await.unwrap().tree_size, 20);
    assert_eq!(signed_sizes(store).await, vec![10, 20, 20]);
}

async fn checkpoints_on_a_timer_even_when_quiet(db: &TestDb) {
    let store = db.open().await;
    append(store.as_ref(), 10, 10).await;
    let key = Arc::new(key());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        Checkpointer {
            every_events: 0,
            every: Duration::from_millis(200),
        }
        .run(store.clone(), key.clone(), async {
            let _ = stopped.await;
        }),
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("checkpointer stops on shutdown")
        .unwrap();
    let cps = checkpoints(store.as_ref(), CheckpointRange::default())
        .await
        .unwrap();
    assert!(cps.len() >= 3, "{} checkpoints in 1.1 s", cps.len());
    let root = tree_root(store.as_ref(), 10).await.unwrap();
    for w in cps.windows(2) {
        assert!(w[1].signed_at >= w[0].signed_at + chrono::Duration::milliseconds(150));
    }
    for c in &cps {
        assert_eq!((c.tree_size, c.root_hash), (10, root));
        c.verify(&key.public_key()).unwrap();
    }
    // A time range selects among them.
    let since = cps[1].signed_at;
    let later = checkpoints(
        store.as_ref(),
        CheckpointRange {
            since: Some(since),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(later.len(), cps.len() - 1);
    let page = checkpoints(
        store.as_ref(),
        CheckpointRange {
            after_seq: cps[0].seq,
            limit: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(page, vec![cps[1].clone()]);
}

/// The latest checkpoint once one of at least `size` events is signed.
async fn signed_by(store: &dyn EventStore, size: u64) -> Checkpoint {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let latest = latest_checkpoint(store).await.unwrap();
        if let Some(c) = latest.filter(|c| c.tree_size >= size) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint of size {size}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every checkpoint's size, in signing order.
async fn signed_sizes(store: &dyn EventStore) -> Vec<u64> {
    checkpoints(store, CheckpointRange::default())
        .await
        .unwrap()
        .iter()
        .map(|c| c.tree_size)
        .collect()
}

async fn checkpoints_after_every_n_events(db: &TestDb) {
    let store = db.open().await;
    let key = Arc::new(key());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        Checkpointer {
            every_events: 50,
            every: Duration::from_secs(3600),
        }
        .run(store.clone(), key, async {
            let _ = stopped.await;
        }),
    );
    // Each step waits for its checkpoint before appending more: a signing
    // that overlaps an append covers whatever had landed by then, so
    // appending everything at once makes the sizes depend on timing.
    let wait_for = |size| signed_by(store.as_ref(), size);
    // No checkpoint yet, so the first one comes at start, of the empty log.
    assert_eq!(wait_for(0).await.tree_size, 0);
    append(store.as_ref(), 49, 7).await;
    // One short of the count: nothing new is signed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        latest_checkpoint(store.as_ref())
            .await
            .unwrap()
            .unwrap()
            .tree_size,
        0
    );
    append(store.as_ref(), 1, 1).await;
    assert_eq!(wait_for(50).await.tree_size, 50);
    append(store.as_ref(), 50, 10).await;
    assert_eq!(wait_for(100).await.tree_size, 100);
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(signed_sizes(store.as_ref()).await, vec![0, 50, 100]);
}

async fn bundles_verify_and_name_tampering(db: &TestDb) {
    let store = db.open().await;
    let store = store.as_ref();
    let dir = std::env::temp_dir().join(format!(
        "ledgerdesk-verifiable-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let key = CheckpointKey::load_or_create(&dir.join("checkpoint.key")).unwrap();
    let pk = key.public_key();
    append(store, 40, 10).await;
    checkpoint_now(store, &key).await.unwrap();
    append(store, 80, 20).await;
    assert!(matches!(
        export_bundle(store, 50, 80, &pk).await,
        Err(AuditError::NotCovered(80))
    ));
    checkpoint_now(store, &key).await.unwrap();

    let bundle = export_bundle(store, 50, 80, &pk).await.unwrap();
    assert_eq!(bundle.events.len(), 31);
    assert_eq!(bundle.checkpoint.tree_size, 120);
    assert_eq!(bundle.previous_checkpoint.as_ref().unwrap().tree_size, 40);
    let json = serde_json::to_string_pretty(&bundle).unwrap();
    let parsed: ledgerdesk_store::Bundle = serde_json::from_str(&json).unwrap();
    let report = verify_bundle(&parsed, Some(&pk)).unwrap();
    assert_eq!(
        (report.events, report.consistent_with, report.key_trusted),
        (31, Some(40), true)
    );
    for (from, to) in [(1, 1), (1, 120), (120, 120), (41, 41), (40, 41)] {
        let b = export_bundle(store, from, to, &pk).await.unwrap();
        verify_bundle(&b, Some(&pk)).unwrap_or_else(|e| panic!("{from}..={to}: {e}"));
    }

    let fails = |b: &ledgerdesk_store::Bundle| verify_bundle(b, Some(&pk)).unwrap_err().to_string();
    let mut t = bundle.clone();
    t.events[5].payload = "{}".into();
    assert!(fails(&t).contains("position 55"), "{}", fails(&t));
    let mut t = bundle.clone();
    t.events.remove(5);
    assert!(fails(&t).contains("expected position 55, found 56"));
    let mut t = bundle.clone();
    let copy: BundleEvent = t.events[5].clone();
    t.events.insert(5, copy);
    assert!(fails(&t).contains("expected position 56, found 55"));
    let mut t = bundle.clone();
    t.events.swap(5, 6);
    assert!(fails(&t).contains("expected position 55, found 56"));
    let mut t = bundle.clone();
    t.checkpoint.tree_size = 119;
    assert!(fails(&t).contains("covering checkpoint"));
    let mut t = bundle.clone();
    t.checkpoint.signature = t.previous_checkpoint.clone().unwrap().signature;
    assert!(fails(&t).contains("covering checkpoint: checkpoint signature does not verify"));

    // A bundle exported after the database was tampered with does not verify.
    unguard_events(db, store).await;
    exec(
        &store.db(),
        "UPDATE events SET metadata = '{\"actor_kind\":\"agent\"}' WHERE position = 60",
    )
    .await
    .unwrap();
    let b = export_bundle(store, 50, 80, &pk).await.unwrap();
    assert!(verify_bundle(&b, Some(&pk))
        .unwrap_err()
        .to_string()
        .contains("position 60"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Several API servers on one PostgreSQL database each run a checkpointer:
/// one trigger must still give one checkpoint, not one per server. (SQLite
/// is one process; a second store there would not even see the first's
/// appends.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_checkpointers_of_two_processes_sign_once_per_trigger() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    let (a, b) = (db.open().await, db.open().await);
    let key = Arc::new(key());
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for store in [&a, &b] {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        tasks.push(tokio::spawn(
            Checkpointer {
                every_events: 50,
                every: Duration::from_secs(3600),
            }
            .run(store.clone(), key.clone(), async {
                let _ = stopped.await;
            }),
        ));
    }
    // Both start with no checkpoint in the database: one signs.
    signed_by(a.as_ref(), 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(signed_sizes(a.as_ref()).await, vec![0]);
    // Both see the head reach 50 (b through NOTIFY): one signs.
    append(a.as_ref(), 50, 10).await;
    signed_by(a.as_ref(), 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(signed_sizes(a.as_ref()).await, vec![0, 50]);
    append(b.as_ref(), 50, 10).await;
    signed_by(a.as_ref(), 100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(signed_sizes(a.as_ref()).await, vec![0, 50, 100]);
    for stop in stops {
        stop.send(()).unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
}
