//! The real server on port 0 against a [`TestDb`], and a client for it.
//! `TEST_LOG=1` shows the server's logs.

use std::sync::Arc;

use ledgerdesk_api::audit_feed::AuditFeed;
use ledgerdesk_api::auth::Verifier;
use ledgerdesk_api::configuration::{LogFormat, Settings};
use ledgerdesk_api::{telemetry, Application};
use ledgerdesk_store::{EventStore, RecordedEvent, StreamRange};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::TestDb;

/// The bootstrap admin.
pub const ADMIN_EMAIL: &str = "admin@desk.example";
/// Its password.
pub const ADMIN_PASSWORD: &str = "admin-password-1";
/// `auth.max_failed_logins` of the test server.
pub const MAX_FAILED: u32 = 3;

pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A plain client.
    pub client: reqwest::Client,
    /// The server's store (through the vault).
    pub store: Arc<dyn EventStore>,
    /// The bootstrap admin's token.
    pub admin: String,
    /// Where files, the signing key and other state live.
    pub dir: std::path::PathBuf,
    /// The server's password verifier (a test may hold its permits).
    pub verifier: Verifier,
    /// The server's live-stream follower and count.
    pub audit_feed: Arc<AuditFeed>,
    _files: TempDir,
}

/// A folder removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Start the server on port 0 against `db` and log the admin in.
pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(db, &[]).await
}

/// [`spawn_app`] with more settings, e.g.
/// `("LEDGERDESK__AUTH__MAX_CONCURRENT_VERIFICATIONS", "1")`; these win.
pub async fn spawn_app_with(db: &TestDb, extra: &[(&str, &str)]) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        telemetry::init(LogFormat::Pretty, "debug", std::io::stderr);
    }
    let files = std::env::temp_dir().join(format!("ledgerdesk-files-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&files).expect("temp dir");
    let settings = [
        ("LEDGERDESK__DATABASE__URL", db.url.clone()),
        ("LEDGERDESK__DATABASE__MAX_CONNECTIONS", "4".into()),
        ("LEDGERDESK__HTTP__BIND", "127.0.0.1:0".into()),
        ("LEDGERDESK__HTTP__WORKERS", "2".into()),
        ("LEDGERDESK__HTTP__MAX_JSON_BYTES", "16384".into()),
        ("LEDGERDESK__BOOTSTRAP__ADMIN_EMAIL", ADMIN_EMAIL.into()),
        (
            "LEDGERDESK__BOOTSTRAP__ADMIN_PASSWORD",
            ADMIN_PASSWORD.into(),
        ),
        ("LEDGERDESK__AUTH__ARGON2_MEMORY_KIB", "64".into()),
        ("LEDGERDESK__AUTH__ARGON2_ITERATIONS", "1".into()),
        (
            "LEDGERDESK__AUTH__MAX_FAILED_LOGINS",
            MAX_FAILED.to_string(),
        ),
        ("LEDGERDESK__FILES__DIR", files.display().to_string()),
        ("LEDGERDESK__FILES__MAX_BYTES", "4096".into()),
        (
            "LEDGERDESK__AUDIT__SIGNING_KEY_FILE",
            files.join("checkpoint.key").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = Settings::from_vars(settings).expect("settings");
    let app = Application::build(&settings).await.expect("build");
    let base = format!("http://127.0.0.1:{}", app.port());
    let store = app.store();
    let verifier = app.verifier();
    let audit_feed = app.audit_feed();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let mut app = TestApp {
        base,
        client,
        store,
        admin: String::new(),
        dir: files.clone(),
        verifier,
        audit_feed,
        _files: TempDir(files),
    };
    app.admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    app
}

impl TestApp {
    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Any request, with an optional token and JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("request")
    }

    /// POST JSON with a token.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.send(Method::POST, path, Some(token), Some(body)).await
    }

    /// GET with a token.
    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.send(Method::GET, path, Some(token), None).await
    }

    /// Log in: the token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let res = self
            .send(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(res.status(), 200, "login {email}");
        let body: Value = res.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    /// A new user of `role`, logged in: (id, token).
    pub async fn user(&self, role: &str) -> (Uuid, String) {
        let email = format!("{role}-{}@desk.example", Uuid::now_v7().simple());
        let res = self
            .post(
                "/api/v1/users",
                &self.admin,
                json!({"name": format!("A {role}"), "email": email, "role": role, "password": "password-123"}),
            )
            .await;
        assert_eq!(res.status(), 201);
        let id = ok_json(res).await["id"].as_str().unwrap().parse().unwrap();
        (id, self.login(&email, "password-123").await)
    }

    /// A new ticket from Carol: its id.
    pub async fn ticket(&self, token: &str) -> Uuid {
        let res = self
            .post(
                "/api/v1/tickets",
                token,
                json!({"subject": "Printer on fire", "body": "It is on fire.", "channel": "email",
                       "requester": {"email": "carol@customer.example", "name": "Carol"}}),
            )
            .await;
        assert_eq!(res.status(), 201);
        ok_json(res).await["id"].as_str().unwrap().parse().unwrap()
    }

    /// The log head position.
    pub async fn head(&self) -> u64 {
        self.store.head().await.unwrap().position
    }

    /// Every event so far.
    pub async fn events(&self) -> Vec<RecordedEvent> {
        self.store.read_all(0, 100_000).await.unwrap()
    }

    /// One stream's events.
    pub async fn stream(&self, stream_id: &str) -> Vec<RecordedEvent> {
        self.store
            .read_stream(stream_id, StreamRange::all())
            .await
            .unwrap()
    }
}

/// The JSON body of a 2xx answer (fails the test otherwise).
pub async fn ok_json(res: Response) -> Value {
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// Assert a problem+json answer and return it.
pub async fn problem(res: Response, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status, "{:?}", res.url().path());
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ct, "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"]
        .as_str()
        .unwrap()
        .starts_with("https://ledgerdesk.dev/problems/"));
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

/// `s` percent-encoded for a query string (everything but the unreserved
/// characters).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
