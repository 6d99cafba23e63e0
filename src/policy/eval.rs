//! Judging one request: one evaluation of the generated verdicts rule on a clone of the warmed
//! engine.
//!
//! The verdicts module (built at load, see `set.rs`) holds one rule per policy, each guarded by
//! the request's run list, and one rule gathering them all. So a request is a single rule
//! evaluation: no query text to parse or schedule, helpers shared by all policies computed once,
//! and policies that do not match the request never evaluated. If that evaluation fails, each
//! matching policy is re-run alone so the failure is pinned on the right policy and the others
//! still report their verdicts.

use serde::Deserialize;
use serde_json::Value;

use super::meta::FailurePolicy;
use super::set::{Policy, PolicySet, RUN_KEY};
use super::{Action, PolicyHit};
use crate::admission::AdmissionRequest;

/// How a hit that stands for a failed evaluation (not a violation) begins.
const FAILED_PREFIX: &str = "policy evaluation failed";
const NO_VERDICT: &str = "policy produced no verdict (fail closed)";

/// Is this hit's message an evaluation failure rather than a violation? (`policy verify` reports
/// those as errors, as gator does, instead of counting them as violations.)
pub(super) fn is_failure_message(message: &str) -> bool {
    message.starts_with(FAILED_PREFIX) || message == NO_VERDICT
}

/// Longest evaluation-error text put in a deny message; the rest is in the log.
const MAX_ERROR_CHARS: usize = 300;

/// `input` for a request: `{"review": …, "parameters": {}}`, the review with the Namespace as
/// `namespaceObject` when known (Gatekeeper's contract). Converted from the decoded JSON by
/// reference: the review is not copied first.
pub(super) fn policy_input(
    req: &AdmissionRequest,
    ctx: &EvalContext<'_>,
) -> anyhow::Result<regorus::Value> {
    let mut review = regorus::Value::deserialize(req.raw())?;
    if let (Some(ns), Ok(map)) = (ctx.namespace, review.as_object_mut()) {
        map.insert(
            regorus::Value::from("namespaceObject"),
            regorus::Value::deserialize(ns)?,
        );
    }
    let mut input = regorus::Value::new_object();
    let map = input.as_object_mut()?;
    map.insert(regorus::Value::from("review"), review);
    map.insert(
        regorus::Value::from("parameters"),
        regorus::Value::new_object(),
    );
    if let Some(extra) = ctx.sandbox_admission {
        map.insert(
            regorus::Value::from(CONTEXT_KEY),
            regorus::Value::deserialize(extra)?,
        );
    }
    Ok(input)
}

/// The input key under which the server offers what it knows beyond the AdmissionRequest: the
/// effective pod of a Sandbox or template, and the runtimes it recognises (`policies/README.md`).
pub const CONTEXT_KEY: &str = "sandbox_admission";

/// What a request is judged with besides the AdmissionRequest itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalContext<'a> {
    /// The request's Namespace object (Gatekeeper's `input.review.namespaceObject`).
    pub namespace: Option<&'a Value>,
    /// `input.sandbox_admission`, when the server has built it.
    pub sandbox_admission: Option<&'a Value>,
}

/// One policy's share of a review, as another engine needs it to judge the review the way
/// this set does: the OPA differential test (tests/opa_differential.rs) hands each to real OPA.
#[derive(Debug, Clone)]
pub struct ReferenceCase {
    pub policy: String,
    /// The module's package as a reference (`data.sandbox.example`); its `violation` rule is
    /// what is judged.
    pub package: String,
    /// The `input` the policy sees: the same review as [`PolicySet::evaluate`] gives it, with
    /// this policy's own `parameters`.
    pub input: Value,
}

impl PolicySet {
    /// The policies that judge `req`, each with the exact `input` it is evaluated with.
    pub fn reference_cases(
        &self,
        req: &AdmissionRequest,
        ctx: &EvalContext<'_>,
    ) -> anyhow::Result<Vec<ReferenceCase>> {
        let input = policy_input(req, ctx)?;
        let mut input: Value = serde_json::from_str(&input.to_json_str()?)?;
        self.policies
            .iter()
            .filter(|p| p.meta.applies_to(req))
            .map(|p| {
                input["parameters"] = p.meta.parameters.clone();
                Ok(ReferenceCase {
                    policy: p.name.clone(),
                    package: p.package.clone(),
                    input: input.clone(),
                })
            })
            .collect()
    }

    /// The violations `req` causes, one hit per violation, in policy order.
    pub fn evaluate(&self, req: &AdmissionRequest, namespace: Option<&Value>) -> Vec<PolicyHit> {
        self.evaluate_with(
            req,
            &EvalContext {
                namespace,
                sandbox_admission: None,
            },
        )
    }

    /// The violations `req` causes when judged with `ctx`.
    pub fn evaluate_with(&self, req: &AdmissionRequest, ctx: &EvalContext<'_>) -> Vec<PolicyHit> {
        let matching: Vec<(usize, &Policy)> = self
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.meta.applies_to(req))
            .collect();
        if matching.is_empty() {
            return Vec::new();
        }
        let input = match policy_input(req, ctx) {
            Ok(input) => input,
            Err(err) => {
                let err = err.context("the review cannot be given to the policies");
                return matching.iter().map(|(_, p)| failure_hit(p, &err)).collect();
            }
        };
        let entry = self.entries.rule_for(&req.kind.group, &req.kind.kind);
        let combined: Vec<usize> = matching
            .iter()
            .filter(|(_, p)| p.separate.is_none())
            .map(|(i, _)| *i)
            .collect();
        let verdicts = (!combined.is_empty()).then(|| {
            let run = self.run_lists.get(&combined, || {
                run_list(combined.iter().map(|&i| self.entries.key(i)))
            });
            self.eval_rule(entry, with_run_list(&input, run))
        });
        let mut hits = Vec::new();
        for (i, policy) in &matching {
            match (&policy.separate, &verdicts) {
                (Some(params), _) => hits.extend(self.evaluate_separate(&input, policy, params)),
                (None, Some(Ok(verdicts))) => {
                    let verdict = verdicts[&self.entries.key(*i)].clone();
                    hits.extend(hits_of(policy, &as_list(verdict)));
                }
                (None, _) => hits.extend(self.evaluate_one(&input, policy)),
            }
        }
        hits
    }

    /// The value of `rule` for `input`, on the compiled program or, when the set is not
    /// compiled, on a clone of the warmed interpreter.
    fn eval_rule(&self, rule: &str, input: regorus::Value) -> anyhow::Result<regorus::Value> {
        match &self.compiled {
            Ok(program) => program.eval(rule, input),
            Err(_) => {
                let mut engine = self.engine.clone();
                engine.set_input(input);
                engine.eval_rule(rule.to_owned())
            }
        }
    }

    /// A policy evaluated on its own with its parameters in `input.parameters` (see
    /// `Policy::separate`).
    fn evaluate_separate(
        &self,
        input: &regorus::Value,
        policy: &Policy,
        params: &regorus::Value,
    ) -> Vec<PolicyHit> {
        match self.eval_rule(&policy.rule, with_parameters(input, params)) {
            Ok(value) => hits_of(policy, &as_list(value)),
            Err(err) => {
                tracing::warn!(policy = %policy.name, file = %policy.file, error = %format!("{err:#}"), "policy evaluation failed");
                vec![failure_hit(policy, &err)]
            }
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

/// `input` with `parameters` replaced (a clone shares everything else).
pub(super) fn with_parameters(input: &regorus::Value, params: &regorus::Value) -> regorus::Value {
    with_key(input, "parameters", params.clone())
}

/// `input` with `key` set to `value`; the clone shares everything else.
fn with_key(input: &regorus::Value, key: &str, value: regorus::Value) -> regorus::Value {
    let mut input = input.clone();
    if let Ok(map) = input.as_object_mut() {
        map.insert(regorus::Value::from(key), value);
    }
    input
}

/// A `violation` rule's value as the list the verdicts module makes of it: a set's members in
/// order, nothing for an undefined rule; anything else is left for `hits_of` to refuse.
fn as_list(value: regorus::Value) -> regorus::Value {
    match value {
        regorus::Value::Set(set) => regorus::Value::from(set.iter().cloned().collect::<Vec<_>>()),
        regorus::Value::Undefined => regorus::Value::new_array(),
        other => other,
    }
}

/// The run list naming the policies to evaluate, by their keys (`EntryRules::key`).
pub(super) fn run_list(keys: impl IntoIterator<Item = regorus::Value>) -> regorus::Value {
    let mut run = regorus::Value::new_object();
    if let Ok(map) = run.as_object_mut() {
        for key in keys {
            map.insert(key, regorus::Value::from(true));
        }
    }
    run
}

/// `input` plus a run list.
pub(super) fn with_run_list(input: &regorus::Value, run: regorus::Value) -> regorus::Value {
    with_key(input, RUN_KEY, run)
}

/// Hits from one policy's violations (an array of Gatekeeper `{"msg", "details"}` objects).
fn hits_of(policy: &Policy, violations: &regorus::Value) -> Vec<PolicyHit> {
    let regorus::Value::Array(list) = violations else {
        // Its rule always yields an array; anything else means the evaluation went wrong.
        return vec![PolicyHit {
            policy: policy.name.clone(),
            action: failure_action(policy),
            message: NO_VERDICT.into(),
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
        message: format!("{FAILED_PREFIX}, {outcome}: {short}"),
    }
}
