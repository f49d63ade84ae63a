//! Login, session cookies, the per-client rate limit and the Origin check.
//!
//! The session password is kept only as its SHA-256 digest and compared in
//! constant time. A successful login creates a random 256-bit token held in
//! memory; the cookie carries the token, never the password. Neither is ever
//! logged.

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Name of the session cookie.
pub const COOKIE: &str = "dozlab_terminal";
/// Wrong passwords allowed per client within [`FAIL_WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// The window of the rate limit.
pub const FAIL_WINDOW: Duration = Duration::from_secs(60);
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Errors of the auth module.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The password is empty.
    #[error("the session password is empty")]
    EmptyPassword,
}

/// The outcome of a login attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    /// Right password: the new session token.
    Ok(String),
    /// Wrong password.
    Wrong,
    /// Too many wrong passwords from this client: retry after this long.
    Limited(Duration),
}

/// Password check, sessions and rate limit.
#[derive(Debug)]
pub struct Auth {
    digest: [u8; 32],
    sessions: Mutex<HashMap<String, Instant>>,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

impl Auth {
    /// Auth for this session password.
    pub fn new(password: &str) -> Result<Self, AuthError> {
        if password.is_empty() {
            return Err(AuthError::EmptyPassword);
        }
        Ok(Self {
            digest: digest(password.as_bytes()),
            sessions: Mutex::default(),
            failures: Mutex::default(),
        })
    }

    /// Checks a password from `client`, applying the rate limit.
    pub fn login(&self, client: IpAddr, password: &str) -> Login {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("lock");
        failures.retain(|_, v| {
            v.retain(|t| now.duration_since(*t) < FAIL_WINDOW);
            !v.is_empty()
        });
        let recent = failures.entry(client).or_default();
        if recent.len() >= MAX_FAILURES {
            let oldest = recent[0];
            return Login::Limited(FAIL_WINDOW.saturating_sub(now.duration_since(oldest)));
        }
        let given = digest(password.as_bytes());
        let diff = given
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            recent.push(now);
            return Login::Wrong;
        }
        failures.remove(&client);
        drop(failures);
        Login::Ok(self.new_session())
    }

    fn new_session(&self) -> String {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let mut sessions = self.sessions.lock().expect("lock");
        let now = Instant::now();
        sessions.retain(|_, t| now.duration_since(*t) < SESSION_TTL);
        sessions.insert(token.clone(), now);
        token
    }

    /// True when `token` is a live session.
    pub fn valid(&self, token: &str) -> bool {
        let sessions = self.sessions.lock().expect("lock");
        sessions
            .get(token)
            .is_some_and(|t| t.elapsed() < SESSION_TTL)
    }

    /// Ends a session.
    pub fn logout(&self, token: &str) {
        self.sessions.lock().expect("lock").remove(token);
    }
}

/// The session token in a `Cookie` header, if any.
pub fn token_from_cookie_header(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value for a new session.
pub fn set_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    let max_age = SESSION_TTL.as_secs();
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// The `Set-Cookie` value that clears the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// True when a request's `Origin` may use this server: no Origin (not a
/// browser), the page's own origin (same host as `Host`), or an allowed one.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed.iter().any(|a| a.trim_end_matches('/') == origin) {
        return true;
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_passwords_are_rate_limited_per_client() {
        let auth = Auth::new("s3cret").unwrap();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(auth.login(a, "nope"), Login::Wrong);
        }
        assert!(matches!(auth.login(a, "s3cret"), Login::Limited(_)));
        let Login::Ok(token) = auth.login(b, "s3cret") else {
            panic!("other clients are not limited")
        };
        assert!(auth.valid(&token));
        auth.logout(&token);
        assert!(!auth.valid(&token));
        assert!(Auth::new("").is_err());
    }

    #[test]
    fn cookies_and_origins() {
        assert_eq!(
            token_from_cookie_header("a=b; dozlab_terminal=tok; c=d"),
            Some("tok")
        );
        assert_eq!(token_from_cookie_header("a=b"), None);
        assert!(set_cookie("t", true).contains("HttpOnly; SameSite=Strict"));
        assert!(set_cookie("t", true).ends_with("; Secure"));
        let allowed = vec!["https://lab.example".to_string()];
        assert!(origin_allowed(None, Some("h:1"), &[]));
        assert!(origin_allowed(Some("http://h:1"), Some("h:1"), &[]));
        assert!(origin_allowed(
            Some("https://lab.example"),
            Some("h:1"),
            &allowed
        ));
        assert!(!origin_allowed(Some("http://evil"), Some("h:1"), &allowed));
        assert!(!origin_allowed(Some("null"), Some("h:1"), &allowed));
    }
}
