//! Admission control of the HTTPS port: what a flood of requests may hold at once.
//!
//! Three bounds, all from configuration (`limits:`), so that memory stays inside the pod's limit
//! whatever clients send (docs/deployment.md, "Memory limit and flood limits"):
//! - **body bytes**: every request reserves its body (its `Content-Length`, or as it grows) from
//!   one of two budgets *before* reading it, and holds the reservation until its answer is built.
//!   Bodies up to `smallBodyBytes` (every ordinary review) use the small budget, bigger ones the
//!   large budget, so connections streaming huge bodies cannot take the room ordinary reviews
//!   need. An h2 connection may hold `largeBodiesPerConnection` large bodies at once.
//! - **reviews decided**: a gate of `maxReviews` slots, of which at most `maxLargeReviews` go to
//!   large reviews; a free slot goes to a waiting small review first. A review that is still
//!   waiting when its deadline (90% of the API server's `?timeout=`) passes leaves the queue
//!   unanswered by the pipeline: nothing is computed for a caller that has given up.
//! - **body-read deadline**: `bodyReadTimeoutSeconds` from the request's headers (or the review
//!   deadline if sooner), so a client sending one byte a second holds its reservation only that
//!   long.
//!
//! Past a bound the answer is immediate: HTTP 429 (budget full) or 503 (no slot before the
//! deadline) with `Retry-After` and a JSON body, counted in
//! `sandbox_admission_overload_rejected_total{reason}`. Nothing waits for memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

pub use crate::config::limits::{LimitsConfig, MAX_BUDGET};
use crate::metrics::Metrics;

/// The size class of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Small,
    Large,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Small => "small",
            Class::Large => "large",
        }
    }
}

/// Why a request was refused for load, as counted in the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// The small-body budget is taken.
    SmallBodies,
    /// The large-body budget is taken.
    LargeBodies,
    /// This connection already holds its share of large bodies.
    ConnectionShare,
    /// No decision slot came free before the review's deadline.
    QueueDeadline,
}

impl Overload {
    pub fn reason(self) -> &'static str {
        match self {
            Overload::SmallBodies => "small_body_budget",
            Overload::LargeBodies => "large_body_budget",
            Overload::ConnectionShare => "connection_share",
            Overload::QueueDeadline => "queue_deadline",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Overload::SmallBodies => {
                "server busy: the budget for request bodies is in use; retry shortly"
            }
            Overload::LargeBodies => {
                "server busy: the budget for large request bodies is in use; retry shortly"
            }
            Overload::ConnectionShare => {
                "server busy: this connection already sends its share of large bodies; retry shortly"
            }
            Overload::QueueDeadline => {
                "server busy: the review could not be started within its deadline; retry shortly"
            }
        }
    }
}

/// Per-connection state shared by the requests of one connection.
#[derive(Debug, Default)]
pub struct ConnectionShare {
    large: AtomicUsize,
}

/// Everything the HTTPS handlers share for admission control.
pub struct Limits {
    pub config: LimitsConfig,
    pub max_body_bytes: usize,
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
    gate: Arc<Gate>,
    /// Concurrent drains of early-answered bodies.
    pub drains: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Limits {
    pub fn new(config: LimitsConfig, max_body_bytes: usize, metrics: Arc<Metrics>) -> Arc<Limits> {
        Arc::new(Limits {
            small: Arc::new(Semaphore::new(config.small_bodies_bytes)),
            large: Arc::new(Semaphore::new(config.large_bodies_bytes)),
            gate: Gate::new(
                config.max_reviews,
                config.max_large_reviews,
                metrics.clone(),
            ),
            drains: Arc::new(Semaphore::new(config.max_drains)),
            config,
            max_body_bytes,
            metrics,
        })
    }

    pub fn class_of(&self, bytes: usize) -> Class {
        if bytes <= self.config.small_body_bytes {
            Class::Small
        } else {
            Class::Large
        }
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.config.body_read_timeout_seconds)
    }

    /// Reserve `bytes` of body for a request of `class`, without waiting.
    pub fn reserve(
        &self,
        class: Class,
        bytes: usize,
        share: Option<&Arc<ConnectionShare>>,
    ) -> Result<Reservation, Overload> {
        let bytes = bytes.clamp(1, MAX_BUDGET);
        let connection = match (class, share) {
            (Class::Large, Some(share)) => {
                let held = share.large.fetch_add(1, Ordering::AcqRel);
                if held >= self.config.large_bodies_per_connection {
                    share.large.fetch_sub(1, Ordering::AcqRel);
                    return Err(Overload::ConnectionShare);
                }
                Some(share.clone())
            }
            _ => None,
        };
        let (semaphore, refusal) = match class {
            Class::Small => (&self.small, Overload::SmallBodies),
            Class::Large => (&self.large, Overload::LargeBodies),
        };
        // `bytes` is clamped to u32 above.
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        match semaphore.clone().try_acquire_many_owned(permits) {
            Ok(permit) => {
                self.metrics
                    .body_bytes_held(class.as_str())
                    .inc_by(bytes as i64);
                Ok(Reservation {
                    class,
                    bytes,
                    _permit: permit,
                    connection,
                    metrics: self.metrics.clone(),
                })
            }
            Err(_) => {
                if let Some(share) = connection {
                    share.large.fetch_sub(1, Ordering::AcqRel);
                }
                Err(refusal)
            }
        }
    }

    /// Wait for a decision slot until `deadline`; `None` when the deadline passed first (the
    /// review then leaves the queue and is never computed).
    pub async fn slot(&self, class: Class, deadline: Instant) -> Option<Slot> {
        self.gate.acquire(class, deadline).await
    }

    pub fn overloaded(&self, why: Overload) {
        self.metrics.overload_rejected(why.reason());
    }
}

/// Body bytes held by one request; released on drop.
pub struct Reservation {
    pub class: Class,
    pub bytes: usize,
    _permit: OwnedSemaphorePermit,
    connection: Option<Arc<ConnectionShare>>,
    metrics: Arc<Metrics>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.metrics
            .body_bytes_held(self.class.as_str())
            .dec_by(self.bytes as i64);
        if let Some(share) = &self.connection {
            share.large.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The decision gate: `slots` reviews at once, at most `large_slots` of them large; a released
/// slot goes to the oldest waiting small review, else to the oldest large one.
struct Gate {
    state: Mutex<GateState>,
    metrics: Arc<Metrics>,
}

struct GateState {
    free: usize,
    large_running: usize,
    max_large: usize,
    small: VecDeque<oneshot::Sender<Slot>>,
    large: VecDeque<oneshot::Sender<Slot>>,
}

/// The right to decide one review; gives the slot back on drop.
pub struct Slot {
    gate: Option<Arc<Gate>>,
    large: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release(self.large);
        }
    }
}

impl Gate {
    fn new(slots: usize, large_slots: usize, metrics: Arc<Metrics>) -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new(GateState {
                free: slots,
                large_running: 0,
                max_large: large_slots,
                small: VecDeque::new(),
                large: VecDeque::new(),
            }),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // A panic while holding this lock cannot leave the counters half-updated (each update
        // is a single statement), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn acquire(self: &Arc<Self>, class: Class, deadline: Instant) -> Option<Slot> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.lock();
            if class == Class::Large {
                st.large.push_back(tx);
            } else {
                st.small.push_back(tx);
            }
            self.dispatch(&mut st);
        }
        let queued = self.metrics.reviews_queued(class.as_str());
        queued.inc();
        let got = tokio::time::timeout_at(deadline, rx).await;
        queued.dec();
        match got {
            Ok(Ok(slot)) => Some(slot),
            // Timed out: our sender is dropped with the receiver, and the next release skips it.
            // A slot sent in the same instant is dropped with the channel and so given back.
            _ => {
                self.lock().prune();
                None
            }
        }
    }

    fn release(self: &Arc<Self>, large: bool) {
        let mut st = self.lock();
        st.free += 1;
        if large {
            st.large_running = st.large_running.saturating_sub(1);
        }
        self.dispatch(&mut st);
    }

    /// Hand free slots to waiters: small ones first, large ones while under their cap.
    fn dispatch(self: &Arc<Self>, st: &mut GateState) {
        while st.free > 0 {
            let (tx, large) = if let Some(tx) = st.small.pop_front() {
                (tx, false)
            } else if st.large_running < st.max_large
                && let Some(tx) = st.large.pop_front()
            {
                (tx, true)
            } else {
                break;
            };
            if tx.is_closed() {
                continue;
            }
            st.free -= 1;
            if large {
                st.large_running += 1;
            }
            let slot = Slot {
                gate: Some(self.clone()),
                large,
            };
            if let Err(mut slot) = tx.send(slot) {
                // The waiter gave up meanwhile: take the slot back without re-entering the lock.
                slot.gate = None;
                st.free += 1;
                if large {
                    st.large_running -= 1;
                }
            }
        }
    }
}

impl GateState {
    /// Forget waiters that gave up, so the queues hold only live requests.
    fn prune(&mut self) {
        self.small.retain(|tx| !tx.is_closed());
        self.large.retain(|tx| !tx.is_closed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(config: LimitsConfig) -> Arc<Limits> {
        Limits::new(config, 3 * 1024 * 1024, Arc::new(Metrics::new()))
    }

    #[test]
    fn defaults_validate() {
        LimitsConfig::default().validate(3 * 1024 * 1024).unwrap();
        let c = LimitsConfig {
            large_bodies_bytes: 1024,
            ..LimitsConfig::default()
        };
        assert!(c.validate(3 * 1024 * 1024).is_err());
    }

    #[test]
    fn budgets_refuse_instead_of_waiting_and_come_back() {
        let l = limits(LimitsConfig {
            small_bodies_bytes: 300 * 1024,
            large_bodies_bytes: 4 * 1024 * 1024,
            ..LimitsConfig::default()
        });
        let a = l.reserve(Class::Small, 200 * 1024, None).unwrap();
        assert_eq!(
            l.reserve(Class::Small, 200 * 1024, None).err(),
            Some(Overload::SmallBodies)
        );
        // The large budget is separate.
        let share = Arc::new(ConnectionShare::default());
        let big = l
            .reserve(Class::Large, 3 * 1024 * 1024, Some(&share))
            .unwrap();
        // One large body per connection by default.
        assert_eq!(
            l.reserve(Class::Large, 1024 * 1024, Some(&share)).err(),
            Some(Overload::ConnectionShare)
        );
        assert_eq!(
            l.reserve(Class::Large, 2 * 1024 * 1024, None).err(),
            Some(Overload::LargeBodies)
        );
        drop((a, big));
        l.reserve(Class::Small, 200 * 1024, None).unwrap();
        l.reserve(Class::Large, 3 * 1024 * 1024, Some(&share))
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn small_reviews_go_first_and_late_ones_leave_the_queue() {
        let l = limits(LimitsConfig {
            max_reviews: 1,
            max_large_reviews: 1,
            ..LimitsConfig::default()
        });
        let far = Instant::now() + Duration::from_secs(60);
        let running = l.slot(Class::Small, far).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |class: Class, name: &'static str, deadline: Instant| {
            let (l, order) = (l.clone(), order.clone());
            tokio::spawn(async move {
                let slot = l.slot(class, deadline).await;
                order.lock().unwrap().push((name, slot.is_some()));
                drop(slot);
            })
        };
        let large = spawn(Class::Large, "large", far);
        tokio::task::yield_now().await;
        let late = spawn(
            Class::Small,
            "late",
            Instant::now() + Duration::from_secs(1),
        );
        tokio::task::yield_now().await;
        let small = spawn(Class::Small, "small", far);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(running);
        for t in [large, late, small] {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec![("late", false), ("small", true), ("large", true)]
        );
    }
}
