//! Login, session cookies, the login limits and the Origin check.
//!
//! The session password is kept only as its SHA-256 digest and compared in
//! constant time. A successful login creates a random 256-bit token held in
//! memory; the cookie carries the token, never the password. Neither is ever
//! logged. Ending a session (logout) cancels its [`CancellationToken`], which
//! closes that session's WebSockets.
//!
//! Wrong passwords slow down their client address (IPv6: its /64) instead of
//! locking it out: the first [`FREE_FAILURES`] cost nothing, each further one
//! makes the address wait 1 s, 2 s, 4 s, ... up to [`MAX_BACKOFF`] before its
//! next attempt is checked; a right password clears the record. On top, at
//! most [`GLOBAL_MAX_FAILURES`] wrong passwords per [`GLOBAL_WINDOW`] are
//! answered from addresses that already failed: beyond that only first
//! attempts from new addresses are checked, so guessing from many addresses
//! stays bounded while the learner's own first try always is.

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Name of the session cookie.
pub const COOKIE: &str = "dozlab_terminal";
/// Wrong passwords an address may send before it has to wait.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait imposed on one address.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// An address without a wrong password for this long starts afresh.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Wrong passwords (all addresses) after which repeat addresses are refused.
pub const GLOBAL_MAX_FAILURES: usize = 100;
/// The window of [`GLOBAL_MAX_FAILURES`].
pub const GLOBAL_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (the oldest is forgotten first).
const MAX_TRACKED: usize = 4096;
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
    /// Not checked: this client must wait this long (backoff or global cap).
    Limited(Duration),
}

#[derive(Debug)]
struct Session {
    created: Instant,
    ended: CancellationToken,
}

/// Password check, sessions and login limits.
#[derive(Debug)]
pub struct Auth {
    digest: [u8; 32],
    sessions: Mutex<HashMap<String, Session>>,
    limiter: Mutex<Limiter>,
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
            limiter: Mutex::default(),
        })
    }

    /// Checks a password from `client`, applying the login limits.
    pub fn login(&self, client: IpAddr, password: &str) -> Login {
        let now = Instant::now();
        let client = limit_key(client);
        let mut limiter = self.limiter.lock().expect("lock");
        if let Err(wait) = limiter.check(client, now) {
            return Login::Limited(wait);
        }
        let given = digest(password.as_bytes());
        let diff = given
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            limiter.failed(client, now);
            return Login::Wrong;
        }
        limiter.by_client.remove(&client);
        drop(limiter);
        Login::Ok(self.new_session())
    }

    fn new_session(&self) -> String {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let mut sessions = self.sessions.lock().expect("lock");
        let now = Instant::now();
        sessions.retain(|_, s| {
            let live = now.duration_since(s.created) < SESSION_TTL;
            if !live {
                s.ended.cancel();
            }
            live
        });
        let session = Session {
            created: now,
            ended: CancellationToken::new(),
        };
        sessions.insert(token.clone(), session);
        token
    }

    /// True when `token` is a live session.
    pub fn valid(&self, token: &str) -> bool {
        self.ended_signal(token).is_some()
    }

    /// For a live session: a token cancelled when the session ends.
    pub fn ended_signal(&self, token: &str) -> Option<CancellationToken> {
        let sessions = self.sessions.lock().expect("lock");
        sessions
            .get(token)
            .filter(|s| s.created.elapsed() < SESSION_TTL)
            .map(|s| s.ended.clone())
    }

    /// Ends a session; its WebSockets close.
    pub fn logout(&self, token: &str) {
        if let Some(s) = self.sessions.lock().expect("lock").remove(token) {
            s.ended.cancel();
        }
    }
}

/// The address the limits apply to: IPv6 by /64 (one host's usual share),
/// IPv4 (and IPv4-mapped IPv6) by address.
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// Wrong passwords of one address.
#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
}

/// Per-address backoff and the global cap.
#[derive(Debug, Default)]
struct Limiter {
    by_client: HashMap<IpAddr, Record>,
    recent: VecDeque<Instant>,
}

/// The wait after `failures` wrong passwords.
fn backoff(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let exp = (failures - FREE_FAILURES).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

impl Limiter {
    /// Ok when an attempt from `client` may be checked now, else how long to wait.
    fn check(&mut self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        self.expire(now);
        let Some(record) = self.by_client.get(&client) else {
            return Ok(());
        };
        let until = record.last + backoff(record.failures);
        if now < until {
            return Err(until - now);
        }
        if self.recent.len() >= GLOBAL_MAX_FAILURES {
            let oldest = *self.recent.front().expect("not empty");
            return Err((oldest + GLOBAL_WINDOW).saturating_duration_since(now));
        }
        Ok(())
    }

    fn failed(&mut self, client: IpAddr, now: Instant) {
        if !self.by_client.contains_key(&client) && self.by_client.len() >= MAX_TRACKED {
            let oldest = self.by_client.iter().min_by_key(|(_, r)| r.last);
            if let Some((&ip, _)) = oldest {
                self.by_client.remove(&ip);
            }
        }
        let record = self.by_client.entry(client).or_insert(Record {
            failures: 0,
            last: now,
        });
        record.failures += 1;
        record.last = now;
        self.recent.push_back(now);
        while self.recent.len() > GLOBAL_MAX_FAILURES {
            self.recent.pop_front();
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= GLOBAL_WINDOW)
        {
            self.recent.pop_front();
        }
        self.by_client
            .retain(|_, r| now.duration_since(r.last) < FORGET_AFTER.max(MAX_BACKOFF));
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
    fn wrong_passwords_back_off_per_client() {
        let auth = Auth::new("s3cret").unwrap();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(auth.login(a, "nope"), Login::Wrong);
        }
        let Login::Limited(wait) = auth.login(a, "s3cret") else {
            panic!("backing off")
        };
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        let Login::Ok(token) = auth.login(b, "s3cret") else {
            panic!("other clients are not limited")
        };
        assert!(auth.valid(&token));
        let ended = auth.ended_signal(&token).unwrap();
        auth.logout(&token);
        assert!(!auth.valid(&token) && ended.is_cancelled());
        assert!(Auth::new("").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_v6_counts_by_64() {
        assert_eq!(backoff(FREE_FAILURES - 1), Duration::ZERO);
        assert_eq!(backoff(FREE_FAILURES), Duration::from_secs(1));
        assert_eq!(backoff(FREE_FAILURES + 3), Duration::from_secs(8));
        assert_eq!(backoff(FREE_FAILURES + 40), MAX_BACKOFF);
        let k = |s: &str| limit_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2::5"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::5"), k("2001:db8:1:3::5"));
        assert_eq!(k("::ffff:10.0.0.1"), k("10.0.0.1"));
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
