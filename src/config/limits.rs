//! The `limits:` section of the configuration: what a flood of requests may hold at once. The
//! bounds are enforced by `server::limits`; the section lives here, below the server, so the
//! configuration never depends on what reads it.

use serde::{Deserialize, Serialize};

/// The `limits:` section of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// Bodies up to this size are small: their own budget, decided first.
    #[serde(default = "default_small_body")]
    pub small_body_bytes: usize,
    /// Body bytes that small requests may hold at once (being read, queued or decided).
    #[serde(default = "default_small_budget")]
    pub small_bodies_bytes: usize,
    /// Body bytes that large requests may hold at once; at least `maxBodyBytes`.
    #[serde(default = "default_large_budget")]
    pub large_bodies_bytes: usize,
    /// Large bodies one connection may hold at once (an h2 connection multiplexes many).
    #[serde(default = "one")]
    pub large_bodies_per_connection: usize,
    /// Reviews decided at once.
    #[serde(default = "default_max_reviews")]
    pub max_reviews: usize,
    /// Of those, large reviews (each decided on its own blocking thread).
    #[serde(default = "one")]
    pub max_large_reviews: usize,
    /// Time a client has to send its whole body, from its request headers.
    #[serde(default = "default_body_timeout")]
    pub body_read_timeout_seconds: u64,
    /// `Retry-After` of an overload refusal.
    #[serde(default = "one_u64")]
    pub retry_after_seconds: u64,
    /// Bodies of early answers (404, 405, 413) read and discarded at once, so that an h2 client
    /// still sending sees its stream end cleanly; past this the stream is reset (NO_ERROR).
    #[serde(default = "default_drains")]
    pub max_drains: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            small_body_bytes: default_small_body(),
            small_bodies_bytes: default_small_budget(),
            large_bodies_bytes: default_large_budget(),
            large_bodies_per_connection: one(),
            max_reviews: default_max_reviews(),
            max_large_reviews: one(),
            body_read_timeout_seconds: default_body_timeout(),
            retry_after_seconds: one_u64(),
            max_drains: default_drains(),
        }
    }
}

fn default_small_body() -> usize {
    256 * 1024
}
fn default_small_budget() -> usize {
    16 * 1024 * 1024
}
fn default_large_budget() -> usize {
    12 * 1024 * 1024
}
fn default_max_reviews() -> usize {
    8
}
fn default_body_timeout() -> u64 {
    5
}
fn default_drains() -> usize {
    16
}
fn one() -> usize {
    1
}
fn one_u64() -> u64 {
    1
}

/// Largest budget a semaphore reservation can express in one call.
pub const MAX_BUDGET: usize = u32::MAX as usize;

impl LimitsConfig {
    pub fn validate(&self, max_body_bytes: usize) -> Result<(), String> {
        if self.small_body_bytes == 0 || self.small_body_bytes > max_body_bytes {
            return Err("limits.smallBodyBytes must be within 1..=maxBodyBytes".into());
        }
        if self.small_bodies_bytes < self.small_body_bytes || self.small_bodies_bytes > MAX_BUDGET {
            return Err(format!(
                "limits.smallBodiesBytes must be within smallBodyBytes..={MAX_BUDGET}"
            ));
        }
        if self.large_bodies_bytes < max_body_bytes || self.large_bodies_bytes > MAX_BUDGET {
            return Err(format!(
                "limits.largeBodiesBytes must be within maxBodyBytes..={MAX_BUDGET} (one largest body must fit)"
            ));
        }
        if self.max_reviews == 0 || self.max_large_reviews == 0 {
            return Err("limits.maxReviews and limits.maxLargeReviews must be at least 1".into());
        }
        if self.max_large_reviews > self.max_reviews {
            return Err("limits.maxLargeReviews cannot exceed limits.maxReviews".into());
        }
        if self.large_bodies_per_connection == 0 {
            return Err("limits.largeBodiesPerConnection must be at least 1".into());
        }
        if self.body_read_timeout_seconds == 0 || self.body_read_timeout_seconds > 30 {
            return Err("limits.bodyReadTimeoutSeconds must be within 1..=30".into());
        }
        if self.retry_after_seconds > 60 {
            return Err("limits.retryAfterSeconds must be at most 60".into());
        }
        Ok(())
    }
}
