//! Judging one request: all matching policies in one query on a clone of the warmed engine.
//!
//! Each policy sees its own `input.parameters` (Gatekeeper's contract) through a `with`
//! modifier in its query statement, so one evaluation serves every policy. If that evaluation
//! fails, each matching policy is re-run alone so the failure is pinned on the right policy and
//! the others still report their verdicts.

use serde_json::{Value, json};

use super::meta::FailurePolicy;
use super::set::{Policy, PolicySet};
use super::{Action, PolicyHit};
use crate::admission::AdmissionRequest;

/// Longest evaluation-error text put in a deny message; the rest is in the log.
const MAX_ERROR_CHARS: usize = 300;

impl PolicySet {
    /// The violations `req` causes, one hit per violation, in policy order.
    pub fn evaluate(&self, req: &AdmissionRequest, namespace: Option<&Value>) -> Vec<PolicyHit> {
        let matching: Vec<&Policy> = self
            .policies
            .iter()
            .filter(|p| p.meta.applies_to(req))
            .collect();
        if matching.is_empty() {
            return Vec::new();
        }
        let mut review = req.raw.clone();
        if let (Some(ns), Value::Object(map)) = (namespace, &mut review) {
            map.insert("namespaceObject".into(), ns.clone());
        }
        let input = regorus::Value::from(json!({"review": review, "parameters": {}}));
        let mut engine = self.engine.clone();
        engine.set_input(input.clone());
        let query = matching
            .iter()
            .map(|p| p.statement.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        match engine.eval_query(query, false) {
            Ok(results) => {
                let bindings = results
                    .result
                    .first()
                    .map(|r| r.bindings.clone())
                    .unwrap_or(regorus::Value::Undefined);
                matching
                    .iter()
                    .flat_map(|p| hits_of(p, &bindings[&regorus::Value::from(p.binding.as_str())]))
                    .collect()
            }
            Err(_) => matching
                .iter()
                .flat_map(|p| self.evaluate_one(&input, p))
                .collect(),
        }
    }

    /// One policy on its own, used to attribute a failed combined evaluation.
    fn evaluate_one(&self, input: &regorus::Value, policy: &Policy) -> Vec<PolicyHit> {
        // A fresh clone: the failed run may have stopped anywhere, and each policy gets its own
        // time budget so one runaway policy cannot take the others' verdicts with it.
        let mut engine = self.engine.clone();
        engine.set_input(input.clone());
        match engine.eval_query(policy.statement.clone(), false) {
            Ok(results) => {
                let value = results
                    .result
                    .first()
                    .map(|r| r.bindings[&regorus::Value::from(policy.binding.as_str())].clone())
                    .unwrap_or(regorus::Value::Undefined);
                hits_of(policy, &value)
            }
            Err(err) => {
                tracing::warn!(policy = %policy.name, file = %policy.file, error = %format!("{err:#}"), "policy evaluation failed");
                vec![failure_hit(policy, &err)]
            }
        }
    }
}

/// Hits from one policy's violations (an array of Gatekeeper `{"msg", "details"}` objects).
fn hits_of(policy: &Policy, violations: &regorus::Value) -> Vec<PolicyHit> {
    let regorus::Value::Array(list) = violations else {
        // The statement always binds an array; anything else means the query went wrong.
        return vec![PolicyHit {
            policy: policy.name.clone(),
            action: failure_action(policy),
            message: "policy produced no verdict (fail closed)".into(),
        }];
    };
    list.iter()
        .map(|v| PolicyHit {
            policy: policy.name.clone(),
            action: policy.action,
            message: message_of(v),
        })
        .collect()
}

fn message_of(violation: &regorus::Value) -> String {
    match &violation[&regorus::Value::from("msg")] {
        regorus::Value::String(s) => s.to_string(),
        regorus::Value::Undefined => {
            let shown = violation.to_json_str().unwrap_or_default();
            format!("violation without a msg: {shown}")
        }
        other => other.to_json_str().unwrap_or_default(),
    }
}

/// A failing policy never acts more strongly than its violations would: a `warn` or `dryrun`
/// policy cannot deny; a `deny` policy denies unless its failurePolicy is `ignore`.
fn failure_action(policy: &Policy) -> Action {
    match (policy.action, policy.failure) {
        (Action::Deny, FailurePolicy::Fail) => Action::Deny,
        (Action::Deny, FailurePolicy::Ignore) | (Action::Warn, _) => Action::Warn,
        (Action::Dryrun, _) => Action::Dryrun,
    }
}

fn failure_hit(policy: &Policy, err: &anyhow::Error) -> PolicyHit {
    // `file:line: message`, without regorus's multi-line source excerpt.
    let located = super::compile::issue_from(&policy.file, err).to_string();
    let first = located.lines().next().unwrap_or("unknown error");
    let mut short: String = first.chars().take(MAX_ERROR_CHARS).collect();
    if first.chars().count() > MAX_ERROR_CHARS {
        short.push('…');
    }
    let outcome = match policy.failure {
        FailurePolicy::Fail => "refused (fail closed)",
        FailurePolicy::Ignore => "ignored (failurePolicy: ignore)",
    };
    PolicyHit {
        policy: policy.name.clone(),
        action: failure_action(policy),
        message: format!("policy evaluation failed, {outcome}: {short}"),
    }
}
