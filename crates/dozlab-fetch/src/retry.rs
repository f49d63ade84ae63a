//! Retries with exponential backoff and jitter.
//!
//! The delay before retry `n` (0-based) is `base * 2^n`, capped at `max`,
//! with "equal jitter": a random point in the upper half, so a classroom of
//! init containers that failed together does not retry in lock-step.
//! Progress (bytes received) resets the count: only consecutive failures count.

use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = no retry).
    pub retries: u32,
    /// Delay before the first retry.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry `n` (0-based) for a jitter value in `[0, 1)`.
    pub fn delay(&self, n: u32, jitter: f64) -> Duration {
        let full = self
            .base
            .saturating_mul(2u32.saturating_pow(n.min(31)))
            .min(self.max);
        let d = full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0);
        // Whole milliseconds: the timer's resolution.
        Duration::from_millis(d.as_millis() as u64)
    }
}

/// Counts consecutive failures and sleeps between attempts.
#[derive(Debug)]
pub struct Retrier {
    policy: RetryPolicy,
    failures: u32,
    rng: u64,
}

impl Retrier {
    /// A retrier with a fresh count.
    pub fn new(policy: RetryPolicy) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(std::process::id()) << 32);
        Self {
            policy,
            failures: 0,
            rng: seed | 1,
        }
    }

    /// Forgets past failures (call when an attempt made progress).
    pub fn progressed(&mut self) {
        self.failures = 0;
    }

    /// Failures counted since the last progress.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure. Returns the delay slept, or `None` when the retries
    /// are used up (then nothing is slept and the caller should give up).
    /// `before_sleep` is told the delay first (to log it).
    pub async fn backoff(&mut self, before_sleep: impl FnOnce(Duration, u32)) -> Option<Duration> {
        if self.failures >= self.policy.retries {
            return None;
        }
        let jitter = self.next_jitter();
        let delay = self.policy.delay(self.failures, jitter);
        self.failures += 1;
        before_sleep(delay, self.failures);
        tokio::time::sleep(delay).await;
        Some(delay)
    }

    fn next_jitter(&mut self) -> f64 {
        // xorshift64: plenty for spreading retries.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn policy(retries: u32) -> RetryPolicy {
        RetryPolicy {
            retries,
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
        }
    }

    #[test]
    fn delays_double_and_are_capped() {
        let p = policy(10);
        assert_eq!(p.delay(0, 0.0), Duration::from_millis(500));
        assert_eq!(p.delay(0, 0.999_999), Duration::from_millis(999));
        assert_eq!(p.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(2, 0.0), Duration::from_secs(2));
        assert_eq!(p.delay(3, 0.0), Duration::from_secs(4));
        assert_eq!(
            p.delay(4, 0.0),
            Duration::from_secs(4),
            "capped at max/2..max"
        );
        assert_eq!(p.delay(40, 0.5), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_the_schedule_then_gives_up() {
        let mut r = Retrier::new(policy(4));
        let start = Instant::now();
        let mut slept = Duration::ZERO;
        for n in 0..4 {
            let before = Instant::now();
            let d = r.backoff(|_, _| {}).await.expect("retries left");
            assert_eq!(Instant::now() - before, d, "slept exactly the delay");
            let full = Duration::from_secs(1 << n).min(Duration::from_secs(8));
            assert!(d >= full / 2 && d <= full, "retry {n}: {d:?}");
            slept += d;
        }
        assert_eq!(r.backoff(|_, _| {}).await, None, "fifth failure gives up");
        assert_eq!(Instant::now() - start, slept, "giving up does not sleep");
        assert!(slept >= Duration::from_millis(500 + 1000 + 2000 + 4000));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_resets_the_count() {
        let mut r = Retrier::new(policy(1));
        assert!(r.backoff(|_, _| {}).await.is_some());
        assert_eq!(r.backoff(|_, _| {}).await, None);
        r.progressed();
        assert_eq!(r.failures(), 0);
        let before = Instant::now();
        let d = r.backoff(|_, _| {}).await.unwrap();
        assert!(d <= Duration::from_secs(1), "back to the first delay");
        assert_eq!(Instant::now() - before, d);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_retries_never_sleeps() {
        let mut r = Retrier::new(policy(0));
        let before = Instant::now();
        assert_eq!(r.backoff(|_, _| {}).await, None);
        assert_eq!(Instant::now(), before);
    }
}
