//! Rate limits: token buckets, each a named limit.

use std::sync::Mutex;
use std::time::Instant;

/// Reports accepted per second across all clients (the bucket also holds this many).
pub const REPORTS_PER_SECOND: f64 = 50.0;

/// A token bucket: at most `rate` admissions a second, and a burst of as many.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket of `rate` tokens, refilled at `rate` a second.
    pub fn new(rate: f64) -> TokenBucket {
        TokenBucket {
            rate,
            bucket: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes a token if there is one.
    pub fn admit(&self) -> bool {
        let mut guard = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *guard;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
