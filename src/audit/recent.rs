//! The last decisions of this replica, in memory, for the admin page: a fixed-size ring, so
//! that memory stays bounded whatever the traffic. Filled only when the admin page is on.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::DecisionRecord;

pub struct Recent {
    /// The records with their sequence numbers, and the last number given.
    ring: Mutex<(VecDeque<(u64, DecisionRecord)>, u64)>,
    capacity: usize,
}

impl Recent {
    pub fn new(capacity: usize) -> Self {
        Recent {
            ring: Mutex::new((VecDeque::with_capacity(capacity.min(4096)), 0)),
            capacity: capacity.max(1),
        }
    }

    /// Keep `record`, dropping the oldest when full. Each record gets a sequence number that
    /// names it on the page (uids repeat: a shadow record shares its review's uid).
    pub fn push(&self, record: DecisionRecord) {
        let mut guard = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (ring, last) = &mut *guard;
        *last += 1;
        if ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back((*last, record));
    }

    /// Newest first.
    pub fn snapshot(&self) -> Vec<(u64, DecisionRecord)> {
        let ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.0.iter().rev().cloned().collect()
    }

    pub fn get(&self, seq: u64) -> Option<DecisionRecord> {
        let ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.0
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, r)| r.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest() {
        let recent = Recent::new(2);
        let record: DecisionRecord = serde_json::from_value(serde_json::json!({
            "time": "2026-03-04T10:00:00Z", "uid": "u", "endpoint": "validate",
            "allowed": true, "decision": "allowed"
        }))
        .unwrap();
        for uid in ["a", "b", "c"] {
            let mut r = record.clone();
            r.uid = uid.into();
            recent.push(r);
        }
        let uids: Vec<String> = recent.snapshot().into_iter().map(|(_, r)| r.uid).collect();
        assert_eq!(uids, vec!["c", "b"]);
        assert!(recent.get(1).is_none());
        assert_eq!(recent.get(3).map(|r| r.uid).as_deref(), Some("c"));
    }
}
