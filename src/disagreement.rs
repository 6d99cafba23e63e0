//! How two verdicts on the same request differ: what `replay` reports between a recorded decision
//! and a candidate set, and what the shadow set counts against the live set. One definition for
//! both, so a replayed flip and a shadow disagreement mean the same thing.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::policy::{Action, PolicyHit};

/// The `endpoint` of a shadow set's decision record.
pub const SHADOW_ENDPOINT: &str = "shadow";

/// Which way one policy's verdict moved, seen from the candidate (`after`) set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The policy denies under the candidate set and did not before.
    NewDenial,
    /// The policy denied before and does not under the candidate set.
    GoneDenial,
    /// A warning (policy and message) the candidate set adds.
    NewWarning,
    /// A warning the candidate set no longer gives.
    GoneWarning,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::NewDenial => "new_denial",
            Direction::GoneDenial => "gone_denial",
            Direction::NewWarning => "new_warning",
            Direction::GoneWarning => "gone_warning",
        }
    }

    pub const ALL: [Direction; 4] = [
        Direction::NewDenial,
        Direction::GoneDenial,
        Direction::NewWarning,
        Direction::GoneWarning,
    ];
}

/// One policy's change between the two verdicts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Change {
    pub policy: String,
    pub direction: Direction,
    /// The message of the side that has the hit (the candidate's for `new_*`, the old for `gone_*`).
    pub message: String,
}

/// How the whole answer moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flip {
    AllowedToDenied,
    DeniedToAllowed,
}

impl Flip {
    pub fn between(before_allowed: bool, after_allowed: bool) -> Option<Flip> {
        match (before_allowed, after_allowed) {
            (true, false) => Some(Flip::AllowedToDenied),
            (false, true) => Some(Flip::DeniedToAllowed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Flip::AllowedToDenied => "allowed→denied",
            Flip::DeniedToAllowed => "denied→allowed",
        }
    }
}

/// What a shadow record adds to a decision record: the live answer it disagrees with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowDetail {
    /// The live set's `decision` (`allowed`, `warned`, `denied`).
    pub live_decision: String,
    pub live_allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flip: Option<Flip>,
    pub changes: Vec<Change>,
}

/// The per-policy changes from `before` to `after`. Denials are compared by policy (a policy
/// that denies for a different reason still denies); warnings by policy and message, since the
/// message is what the user sees. `dryrun` hits are recorded only, never compared.
pub fn changes(before: &[PolicyHit], after: &[PolicyHit]) -> Vec<Change> {
    let mut out = BTreeSet::new();
    let denying = |hits: &[PolicyHit]| -> Vec<(String, String)> {
        let mut seen = BTreeSet::new();
        hits.iter()
            .filter(|h| h.action == Action::Deny && seen.insert(h.policy.clone()))
            .map(|h| (h.policy.clone(), h.message.clone()))
            .collect()
    };
    let warning = |hits: &[PolicyHit]| -> BTreeSet<(String, String)> {
        hits.iter()
            .filter(|h| h.action == Action::Warn)
            .map(|h| (h.policy.clone(), h.message.clone()))
            .collect()
    };
    let (deny_before, deny_after) = (denying(before), denying(after));
    for (policy, message) in &deny_after {
        if !deny_before.iter().any(|(p, _)| p == policy) {
            out.insert(Change {
                policy: policy.clone(),
                direction: Direction::NewDenial,
                message: message.clone(),
            });
        }
    }
    for (policy, message) in &deny_before {
        if !deny_after.iter().any(|(p, _)| p == policy) {
            out.insert(Change {
                policy: policy.clone(),
                direction: Direction::GoneDenial,
                message: message.clone(),
            });
        }
    }
    let (warn_before, warn_after) = (warning(before), warning(after));
    for (policy, message) in warn_after.difference(&warn_before) {
        out.insert(Change {
            policy: policy.clone(),
            direction: Direction::NewWarning,
            message: message.clone(),
        });
    }
    for (policy, message) in warn_before.difference(&warn_after) {
        out.insert(Change {
            policy: policy.clone(),
            direction: Direction::GoneWarning,
            message: message.clone(),
        });
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(policy: &str, action: Action, message: &str) -> PolicyHit {
        PolicyHit {
            policy: policy.into(),
            action,
            message: message.into(),
        }
    }

    #[test]
    fn denials_by_policy_warnings_by_message() {
        let before = [
            hit("a", Action::Deny, "x"),
            hit("b", Action::Warn, "w1"),
            hit("d", Action::Dryrun, "d"),
        ];
        let after = [
            hit("a", Action::Deny, "other reason"),
            hit("c", Action::Deny, "new"),
            hit("b", Action::Warn, "w2"),
        ];
        let got: Vec<(String, Direction)> = changes(&before, &after)
            .into_iter()
            .map(|c| (c.policy, c.direction))
            .collect();
        assert_eq!(
            got,
            vec![
                ("b".into(), Direction::NewWarning),
                ("b".into(), Direction::GoneWarning),
                ("c".into(), Direction::NewDenial),
            ]
        );
        assert!(changes(&before, &before).is_empty());
        assert_eq!(Flip::between(true, false), Some(Flip::AllowedToDenied));
        assert_eq!(Flip::between(false, false), None);
    }

    #[test]
    fn a_warning_turned_denial_is_both() {
        let got = changes(
            &[hit("a", Action::Warn, "m")],
            &[hit("a", Action::Deny, "m")],
        );
        let dirs: Vec<Direction> = got.iter().map(|c| c.direction).collect();
        assert_eq!(dirs, vec![Direction::NewDenial, Direction::GoneWarning]);
    }
}
