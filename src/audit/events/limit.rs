//! A token bucket, so a storm of denials becomes a trickle of Events, never a flood on the API
//! server. Time is passed in, so tests drive it without waiting.

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket: the first `burst` events pass at once, then `rate_per_second`.
    pub fn new(rate_per_second: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate_per_second: rate_per_second.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Take one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_second).min(self.burst);
        self.last = now.max(self.last);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5, t0);
        let passed = (0..8).filter(|_| b.try_take(t0)).count();
        assert_eq!(passed, 5, "the burst passes, the rest is refused");
        // 250 ms at 10/s refills 2.5 tokens: two pass.
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!((0..5).filter(|_| b.try_take(t1)).count(), 2);
        // A long quiet spell refills up to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.try_take(t2)).count(), 5);
        // A clock that goes backwards never mints tokens.
        assert!(!b.try_take(t0));
    }
}
