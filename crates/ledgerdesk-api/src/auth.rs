//! Who is calling: passwords (Argon2id), bearer tokens (256 random bits,
//! stored as SHA-256), roles, and the slowing down of failed logins.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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

/// Counts failed logins per account and per address in a sliding window;
/// past the limit, attempts are refused until the oldest failure leaves the
/// window. In memory, per process.
#[derive(Debug)]
pub struct LoginLimiter {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// From the `[auth]` settings.
    pub fn new(settings: &AuthSettings) -> Self {
        Self {
            max: settings.max_failed_logins as usize,
            window: Duration::from_secs(settings.failure_window_secs),
            failures: Mutex::default(),
        }
    }

    fn keys(email: &str, ip: &str) -> [String; 2] {
        [format!("email:{email}"), format!("ip:{ip}")]
    }

    /// Seconds to wait, when either the account or the address is over the limit.
    pub fn retry_after(&self, email: &str, ip: &str) -> Option<u64> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        Self::keys(email, ip)
            .iter()
            .filter_map(|key| {
                let times = failures.get_mut(key)?;
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    times.pop_front();
                }
                if times.len() < self.max {
                    return None;
                }
                // Free again when enough failures have left the window.
                let oldest = times[times.len() - self.max];
                let wait = self.window.saturating_sub(now.duration_since(oldest));
                Some(wait.as_secs().max(1))
            })
            .max()
    }

    /// Count a failure for the account and the address.
    pub fn fail(&self, email: &str, ip: &str) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 100_000 {
            let window = self.window;
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        for key in Self::keys(email, ip) {
            let times = failures.entry(key).or_default();
            times.push_back(now);
            while times.len() > self.max {
                times.pop_front();
            }
        }
    }

    /// A successful login clears the account's count (not the address's).
    pub fn succeed(&self, email: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&format!("email:{email}"));
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
        let l = LoginLimiter::new(&settings(2));
        assert_eq!(l.retry_after("a@x", "1.1.1.1"), None);
        l.fail("a@x", "1.1.1.1");
        l.fail("a@x", "2.2.2.2");
        assert!(l.retry_after("a@x", "3.3.3.3").is_some(), "account");
        l.fail("b@x", "9.9.9.9");
        l.fail("c@x", "9.9.9.9");
        assert!(l.retry_after("d@x", "9.9.9.9").is_some(), "address");
        l.succeed("a@x");
        assert_eq!(l.retry_after("a@x", "3.3.3.3"), None);
    }
}
