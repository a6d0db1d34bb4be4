//! Who is calling: passwords (Argon2id), bearer tokens (256 random bits,
//! stored as SHA-256), roles, and the slowing down of failed logins.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::configuration::AuthSettings;

/// What a user may do; see [`crate::permissions::PERMISSIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Works tickets.
    Agent,
    /// Everything: users, departments, settings.
    Admin,
    /// Reads tickets and the logs; changes nothing.
    Auditor,
}

impl Role {
    /// From the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "agent" => Some(Role::Agent),
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

/// The authenticated caller of a request, put in the request's extensions
/// by the permission middleware.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user.
    pub user_id: Uuid,
    /// Their role.
    pub role: Role,
    /// SHA-256 of the token used (for logout).
    pub token_hash: String,
}

/// Hashes and verifies passwords with Argon2id.
#[derive(Clone)]
pub struct Passwords {
    params: Params,
    /// A hash of a random password, verified when the email is unknown so
    /// that unknown and known emails take the same time.
    dummy: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords")
    }
}

/// Shortest password accepted.
pub const PASSWORD_MIN: usize = 8;
/// Longest password accepted (Argon2 input is unbounded; keep it sane).
pub const PASSWORD_MAX: usize = 1024;

impl Passwords {
    /// With the configured cost.
    pub fn new(settings: &AuthSettings) -> Result<Self, argon2::Error> {
        let params = Params::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            1,
            None,
        )?;
        let mut this = Self {
            params,
            dummy: String::new(),
        };
        this.dummy = this
            .hash(&new_token())
            .map_err(|_| argon2::Error::AlgorithmInvalid)?;
        Ok(this)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC string for `password` (CPU-heavy: call from a blocking thread).
    pub fn hash(&self, password: &str) -> Result<String, argon2::password_hash::Error> {
        let salt = SaltString::generate(&mut OsRng);
        Ok(self
            .argon2()
            .hash_password(password.as_bytes(), &salt)?
            .to_string())
    }

    /// Whether `password` matches `hash`; with `None`, verifies against the
    /// dummy hash and answers false, taking the same time.
    pub fn verify(&self, password: &str, hash: Option<&str>) -> bool {
        let candidate = hash.unwrap_or(&self.dummy);
        let matches = PasswordHash::new(candidate)
            .map(|parsed| {
                self.argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        matches && hash.is_some()
    }
}

/// A new bearer token: 256 random bits, hex, with a recognisable prefix.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("ldt_{}", hex::encode(bytes))
}

/// What the sessions table keeps of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A password for the first admin when none is configured.
pub fn generated_password() -> String {
    let mut bytes = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Emails are compared trimmed and lowercased.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Counts login attempts per account and per address in a sliding window.
/// An attempt takes a slot *before* its password is checked, under the
/// lock, so parallel attempts cannot all slip in below the limit: past
/// `max` failed plus in-flight attempts, further ones are refused until the
/// oldest failure leaves the window. In memory, per process: each server
/// process sharing a database counts on its own.
#[derive(Debug)]
pub struct LoginLimiter {
    max: usize,
    window: Duration,
    keys: Mutex<HashMap<LimitKey, KeyState>>,
}

/// What the limiter counts attempts of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A login email (normalised), whether or not an account has it.
    Account(String),
    /// A caller's IP address.
    Address(String),
}

#[derive(Debug, Default)]
struct KeyState {
    failures: VecDeque<Instant>,
    in_flight: usize,
    /// Refused attempts not yet reported.
    refused: u64,
    /// When refusals of this key were last reported.
    reported: Option<Instant>,
}

impl KeyState {
    fn prune(&mut self, now: Instant, window: Duration) {
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.failures.pop_front();
        }
    }

    fn idle(&self, now: Instant, window: Duration) -> bool {
        self.in_flight == 0
            && self.refused == 0
            && self
                .failures
                .back()
                .is_none_or(|t| now.duration_since(*t) >= window)
    }
}

/// Refused attempts of one key to record: once when a throttle starts, then
/// at most once per window while it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleReport {
    /// Whose attempts.
    pub key: LimitKey,
    /// How many were refused since the previous report.
    pub refused: u64,
}

/// Why an attempt may not go ahead.
#[derive(Debug)]
pub struct Refused {
    /// Seconds to wait.
    pub retry_after: u64,
    /// Refusals due to be recorded now (most refusals have none).
    pub reports: Vec<ThrottleReport>,
}

/// A slot taken by [`LoginLimiter::begin`]. Say how it ended with
/// [`Attempt::failed`], [`Attempt::succeeded`] or [`Attempt::unchecked`];
/// dropped without that (an error, a client gone), it counts as failed, so
/// that cutting a request short is no way around the limit.
#[derive(Debug)]
pub struct Attempt {
    limiter: Arc<LoginLimiter>,
    keys: [LimitKey; 2],
    done: bool,
}

impl LoginLimiter {
    /// From the `[auth]` settings.
    pub fn new(settings: &AuthSettings) -> Self {
        Self {
            max: settings.max_failed_logins as usize,
            window: Duration::from_secs(settings.failure_window_secs),
            keys: Mutex::default(),
        }
    }

    /// The window failures count in.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn keys(email: &str, ip: &str) -> [LimitKey; 2] {
        [
            LimitKey::Account(email.to_string()),
            LimitKey::Address(ip.to_string()),
        ]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LimitKey, KeyState>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a slot for an attempt on `email` from `ip`, or refuse it when
    /// the account or the address has `max` failed or pending attempts.
    pub fn begin(self: &Arc<Self>, email: &str, ip: &str) -> Result<Attempt, Refused> {
        let now = Instant::now();
        let keys = Self::keys(email, ip);
        let mut states = self.lock();
        if states.len() > 100_000 {
            let window = self.window;
            states.retain(|_, s| !s.idle(now, window));
        }
        let mut retry_after = None;
        let mut reports = Vec::new();
        for key in &keys {
            // Read only: a key with no entry is under the limit, and a
            // refused attempt must not leave an entry behind (a throttled
            // caller could otherwise fill the map with new emails).
            let Some(state) = states.get_mut(key) else {
                continue;
            };
            state.prune(now, self.window);
            if state.failures.len() + state.in_flight < self.max {
                continue;
            }
            // Free again when enough failures have left the window; while
            // attempts are pending, shortly.
            let wait = match state.failures.len().checked_sub(self.max) {
                Some(i) => self
                    .window
                    .saturating_sub(now.duration_since(state.failures[i]))
                    .as_secs(),
                None => 1,
            };
            retry_after = Some(retry_after.unwrap_or(0).max(wait.max(1)));
            state.refused += 1;
            if state
                .reported
                .is_none_or(|at| now.duration_since(at) >= self.window)
            {
                reports.push(ThrottleReport {
                    key: key.clone(),
                    refused: std::mem::take(&mut state.refused),
                });
                state.reported = Some(now);
            }
        }
        if let Some(retry_after) = retry_after {
            return Err(Refused {
                retry_after,
                reports,
            });
        }
        for key in &keys {
            states.entry(key.clone()).or_default().in_flight += 1;
        }
        Ok(Attempt {
            limiter: self.clone(),
            keys,
            done: false,
        })
    }

    /// Refusals not reported for a window: what a throttle refused since
    /// its last report, once the caller has gone quiet or keeps trying.
    pub fn due_reports(&self) -> Vec<ThrottleReport> {
        let now = Instant::now();
        let mut states = self.lock();
        let mut reports = Vec::new();
        for (key, state) in states.iter_mut() {
            let due = state
                .reported
                .is_none_or(|at| now.duration_since(at) >= self.window);
            if state.refused > 0 && due {
                reports.push(ThrottleReport {
                    key: key.clone(),
                    refused: std::mem::take(&mut state.refused),
                });
                state.reported = Some(now);
            }
        }
        reports
    }

    fn finish(&self, keys: &[LimitKey; 2], outcome: Outcome) {
        let now = Instant::now();
        let mut states = self.lock();
        for key in keys {
            let state = states.entry(key.clone()).or_default();
            state.in_flight = state.in_flight.saturating_sub(1);
            match outcome {
                Outcome::Failed => {
                    state.failures.push_back(now);
                    while state.failures.len() > self.max {
                        state.failures.pop_front();
                    }
                }
                // A successful login clears the account's count (not the
                // address's).
                Outcome::Succeeded if matches!(key, LimitKey::Account(_)) => {
                    state.failures.clear();
                }
                Outcome::Succeeded | Outcome::Unchecked => {}
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Failed,
    Succeeded,
    Unchecked,
}

impl Attempt {
    fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.limiter.finish(&self.keys, outcome);
    }

    /// The password was wrong (or the account cannot log in).
    pub fn failed(self) {
        self.finish(Outcome::Failed)
    }

    /// Logged in.
    pub fn succeeded(self) {
        self.finish(Outcome::Succeeded)
    }

    /// The password was never checked (the server was too busy): the slot
    /// is given back without counting a failure.
    pub fn unchecked(self) {
        self.finish(Outcome::Unchecked)
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.finish(&self.keys, Outcome::Failed);
        }
    }
}

/// Password verification on a few threads of its own, at most one run per
/// thread: each Argon2 run holds `argon2_memory_kib`, and the allocator
/// keeps what a thread freed for that thread, so runs spread over a
/// growing blocking pool would leave the whole server's memory behind
/// them. A login that waits longer than `wait` for a turn is answered 503
/// instead of queueing without end.
#[derive(Clone)]
pub struct Verifier {
    passwords: Passwords,
    permits: Arc<Semaphore>,
    jobs: std::sync::mpsc::SyncSender<Job>,
    wait: Duration,
    waiting: Arc<AtomicUsize>,
}

type Job = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("available", &self.permits.available_permits())
            .field("wait", &self.wait)
            .finish()
    }
}

/// No verification slot came free in time.
#[derive(Debug, thiserror::Error)]
#[error("every password verifier is busy")]
pub struct Saturated;

impl Verifier {
    /// `max` verifications at a time (0: one per core), waiting at most
    /// `wait` for a turn; `max` threads run them.
    pub fn new(passwords: Passwords, max: usize, wait: Duration) -> Self {
        let max = match max {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(max);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..max {
            let queue = queue.clone();
            // The threads end when the last Verifier (the sender) is gone.
            let _ = std::thread::Builder::new()
                .name(format!("password-verifier-{i}"))
                .spawn(move || loop {
                    let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => break,
                    }
                });
        }
        Self {
            passwords,
            permits: Arc::new(Semaphore::new(max)),
            jobs,
            wait,
            waiting: Arc::default(),
        }
    }

    /// Whether `password` matches `hash` (see [`Passwords::verify`]).
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, Saturated> {
        let permit = {
            // Counted while waiting, and uncounted however the wait ends
            // (a client gone drops this future mid-wait).
            struct Waiting<'a>(&'a AtomicUsize);
            impl Drop for Waiting<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _waiting = Waiting(&self.waiting);
            tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await
        };
        let permit = match permit {
            Ok(Ok(permit)) => permit,
            _ => return Err(Saturated),
        };
        let passwords = self.passwords.clone();
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The permit lives as long as the hashing, even when the
            // request that started it is gone: one run per thread.
            let _permit = permit;
            let _ = answer.send(passwords.verify(&password, hash.as_deref()));
        });
        // A permit is held, so a thread is free or about to be: the
        // channel has room.
        self.jobs.try_send(job).map_err(|_| Saturated)?;
        answered.await.map_err(|_| Saturated)
    }

    /// Logins waiting for a turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// The turns themselves: a test holds them to saturate the verifier.
    pub fn permits(&self) -> Arc<Semaphore> {
        self.permits.clone()
    }

    /// How long a login waits for a turn; also its `Retry-After`.
    pub fn wait(&self) -> Duration {
        self.wait
    }
}

/// Live sessions recently looked up, so that most requests skip the
/// sessions query. Revocations in this process (logout, deactivation, role
/// or password change) take effect at once; another process's revocation
/// reaches this one within [`SESSION_CACHE_TTL`].
#[derive(Debug, Default)]
pub struct SessionCache {
    entries: Mutex<HashMap<String, (crate::db::SessionRow, Instant)>>,
}

/// How long a looked-up session is trusted without asking the database.
pub const SESSION_CACHE_TTL: Duration = Duration::from_secs(5);

impl SessionCache {
    /// A fresh entry for the token hash.
    pub fn get(&self, token_hash: &str) -> Option<crate::db::SessionRow> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (row, at) = entries.get(token_hash)?;
        (at.elapsed() < SESSION_CACHE_TTL && row.expires_at > chrono::Utc::now().timestamp())
            .then(|| row.clone())
    }

    /// Remember a live session.
    pub fn put(&self, token_hash: &str, row: crate::db::SessionRow) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() > 50_000 {
            entries.retain(|_, (_, at)| at.elapsed() < SESSION_CACHE_TTL);
        }
        entries.insert(token_hash.to_string(), (row, Instant::now()));
    }

    /// Forget one token.
    pub fn forget(&self, token_hash: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(token_hash);
    }

    /// Forget every token of a user.
    pub fn forget_user(&self, user_id: Uuid) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (row, _)| row.user_id != user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: u32) -> AuthSettings {
        AuthSettings {
            token_ttl_secs: 60,
            max_failed_logins: max,
            failure_window_secs: 60,
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            max_concurrent_verifications: 1,
            verification_wait_ms: 100,
        }
    }

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let p = Passwords::new(&settings(3)).unwrap();
        let h = p.hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(p.verify("correct horse", Some(&h)));
        assert!(!p.verify("wrong", Some(&h)));
        assert!(!p.verify("correct horse", None));
    }

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }

    #[test]
    fn the_limiter_refuses_after_max_failures_per_account_or_address() {
        let l = Arc::new(LoginLimiter::new(&settings(2)));
        l.begin("a@x", "1.1.1.1").unwrap().failed();
        l.begin("a@x", "2.2.2.2").unwrap().failed();
        assert!(l.begin("a@x", "3.3.3.3").is_err(), "account");
        l.begin("b@x", "9.9.9.9").unwrap().failed();
        l.begin("c@x", "9.9.9.9").unwrap().failed();
        assert!(l.begin("d@x", "9.9.9.9").is_err(), "address");
        let mut states = l.lock();
        states
            .get_mut(&LimitKey::Account("a@x".into()))
            .unwrap()
            .failures
            .clear();
        drop(states);
        l.begin("a@x", "3.3.3.3").unwrap().succeeded();
    }

    #[test]
    fn attempts_in_flight_take_their_slot_before_the_password_is_checked() {
        let l = Arc::new(LoginLimiter::new(&settings(2)));
        let first = l.begin("a@x", "1.1.1.1").unwrap();
        let second = l.begin("a@x", "2.2.2.2").unwrap();
        // Nothing has failed yet, and still a third attempt must wait.
        let refused = l.begin("a@x", "3.3.3.3").unwrap_err();
        assert_eq!(refused.retry_after, 1);
        first.unchecked();
        let third = l.begin("a@x", "3.3.3.3").unwrap();
        second.failed();
        drop(third); // an attempt cut short counts as failed
        assert!(l.begin("a@x", "4.4.4.4").unwrap_err().retry_after > 1);
    }

    #[test]
    fn refused_attempts_leave_no_entry_behind() {
        let l = Arc::new(LoginLimiter::new(&settings(1)));
        l.begin("a@x", "1.1.1.1").unwrap().failed();
        // A throttled address trying ever new emails grows nothing.
        for i in 0..100 {
            assert!(l.begin(&format!("new-{i}@x"), "1.1.1.1").is_err());
        }
        assert_eq!(l.lock().len(), 2, "the account and the address only");
    }

    #[test]
    fn a_success_clears_the_account_but_not_the_address() {
        let l = Arc::new(LoginLimiter::new(&settings(2)));
        l.begin("a@x", "1.1.1.1").unwrap().failed();
        l.begin("b@x", "1.1.1.1").unwrap().failed();
        l.begin("a@x", "2.2.2.2").unwrap().succeeded();
        l.begin("a@x", "3.3.3.3").unwrap().failed();
        assert!(
            l.begin("a@x", "4.4.4.4").is_ok(),
            "the account starts again"
        );
        assert!(
            l.begin("d@x", "1.1.1.1").is_err(),
            "the address keeps its count"
        );
    }

    #[test]
    fn a_throttle_is_reported_when_it_starts_then_once_per_window() {
        let l = Arc::new(LoginLimiter::new(&settings(1)));
        l.begin("a@x", "1.1.1.1").unwrap().failed();
        let first = l.begin("a@x", "1.1.1.1").unwrap_err();
        assert_eq!(
            first.reports,
            [
                ThrottleReport {
                    key: LimitKey::Account("a@x".into()),
                    refused: 1
                },
                ThrottleReport {
                    key: LimitKey::Address("1.1.1.1".into()),
                    refused: 1
                },
            ]
        );
        for _ in 0..50 {
            assert!(l.begin("a@x", "1.1.1.1").unwrap_err().reports.is_empty());
        }
        assert!(
            l.due_reports().is_empty(),
            "not before the window has passed"
        );
        let mut states = l.lock();
        for state in states.values_mut() {
            state.reported = Instant::now().checked_sub(Duration::from_secs(61));
        }
        drop(states);
        let mut due = l.due_reports();
        due.sort_by_key(|r| matches!(r.key, LimitKey::Address(_)));
        assert_eq!(due.iter().map(|r| r.refused).collect::<Vec<_>>(), [50, 50]);
        assert!(l.due_reports().is_empty());
    }
}
