//! Why a policy fired, or did not: one policy evaluated alone on the request's input with the
//! engine's explanation trace on (vendor/regorus patch 6), read back as the `violation` body
//! that produced each violation, its expressions with the values bound when it held, and the
//! `input` fields the message was built from.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use super::eval::{EvalContext, policy_input};
use super::set::PolicySet;
use crate::admission::AdmissionRequest;
use regorus::explain::Event;

/// One expression of a body, with the variables it names and their values.
#[derive(Debug, Clone, Serialize)]
pub struct Expression {
    pub line: u32,
    pub text: String,
    pub values: BTreeMap<String, Value>,
}

/// One violation and the body that produced it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Firing {
    pub file: String,
    /// Line of the `violation` rule whose body produced it.
    pub line: u32,
    pub rule: String,
    /// The message, when the body binds it (`msg`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub expressions: Vec<Expression>,
    /// `input…` references the message depends on, through the body's assignments.
    pub inputs: Vec<String>,
}

/// A `violation` body that produced nothing, and the first expression that failed in it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Miss {
    pub file: String,
    pub line: u32,
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failed: Option<Expression>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyExplanation {
    pub policy: String,
    pub file: String,
    pub applies: bool,
    pub firings: Vec<Firing>,
    pub misses: Vec<Miss>,
}

struct Frame {
    file: String,
    line: u32,
    rule: String,
    is_violation: bool,
    /// (line, col) → (text, passed at least once)
    stmts: BTreeMap<(u32, u32), (String, bool)>,
    first_failed: Option<(u32, String)>,
    produced: bool,
}

fn identifiers(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    let mut prev_dot = false;
    let mut in_string = false;
    let mut last = ' ';
    for c in text.chars().chain(std::iter::once(' ')) {
        if in_string {
            if c == '"' && last != '\\' {
                in_string = false;
            }
            last = c;
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            if !word.is_empty() && !prev_dot && !word.starts_with(|d: char| d.is_ascii_digit()) {
                out.insert(std::mem::take(&mut word));
            }
            word.clear();
            prev_dot = c == '.';
            if c == '"' {
                in_string = true;
            }
        }
        last = c;
    }
    out
}

/// The variables an expression binds (`x := …`, `x = …`, `some a, b in …`).
fn bound_by(text: &str) -> Vec<String> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("some ") {
        let vars = rest.split(" in ").next().unwrap_or("");
        return vars
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
    }
    for op in [":=", "="] {
        if let Some((lhs, _)) = t.split_once(op) {
            let lhs = lhs.trim();
            if lhs.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !lhs.is_empty() {
                return vec![lhs.to_owned()];
            }
            return Vec::new();
        }
    }
    Vec::new()
}

/// The module text as the author wrote it: a policy whose parameters were pointed straight at
/// `data` (`set::direct_parameters`, same lines) reads `input.parameters` again.
fn as_written(text: &str) -> String {
    match Regex::new(r"data\.__sandbox_admission\.parameters\.f[0-9]+") {
        Ok(re) => re.replace_all(text, "input.parameters").into_owned(),
        Err(_) => text.to_owned(),
    }
}

fn input_refs(text: &str) -> Vec<String> {
    // Only the static shape matters here; the pattern is a literal, so it always compiles.
    let re = Regex::new(r"\b(input|data|lib)(\.[A-Za-z_][A-Za-z0-9_]*|\[[^\]]*\])+").ok();
    re.map(|re| re.find_iter(text).map(|m| m.as_str().to_owned()).collect())
        .unwrap_or_default()
}

impl PolicySet {
    /// Evaluate policy `name` alone on `req` with the explanation trace, and read it back.
    pub fn explain_policy(
        &self,
        req: &AdmissionRequest,
        ctx: &EvalContext<'_>,
        name: &str,
    ) -> Result<PolicyExplanation, String> {
        let policy = self
            .policies
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("no policy named {name:?} in the set"))?;
        let mut out = PolicyExplanation {
            policy: policy.name.clone(),
            file: policy.file.clone(),
            applies: policy.meta.applies_to(req),
            firings: Vec::new(),
            misses: Vec::new(),
        };
        let input = policy_input(req, ctx).map_err(|e| e.to_string())?;
        let mut engine = self.engine.clone();
        engine.set_input(input);
        engine.set_enable_explain(true);
        let evaluated = engine.eval_query(policy.statement.clone(), false);
        let events = engine.take_explain();
        if let Err(e) = evaluated {
            return Err(format!("policy evaluation failed: {e}"));
        }
        let mut stack: Vec<Frame> = Vec::new();
        for event in events {
            match event {
                Event::Body { file, line, rule } => {
                    let rule = as_written(&rule);
                    let is_violation =
                        file == policy.file && rule.trim_start().starts_with("violation");
                    stack.push(Frame {
                        file,
                        line,
                        rule,
                        is_violation,
                        stmts: BTreeMap::new(),
                        first_failed: None,
                        produced: false,
                    });
                }
                Event::Stmt {
                    file,
                    line,
                    col,
                    text,
                    passed,
                } => {
                    let text = as_written(&text);
                    if let Some(top) = stack.last_mut()
                        && top.is_violation
                        && file == top.file
                    {
                        let entry = top
                            .stmts
                            .entry((line, col))
                            .or_insert((text.clone(), false));
                        entry.1 |= passed;
                        if !passed && top.first_failed.is_none() {
                            top.first_failed = Some((line, text));
                        }
                    }
                }
                Event::Output { bindings } => {
                    let Some(top) = stack.last_mut() else {
                        continue;
                    };
                    if !top.is_violation {
                        continue;
                    }
                    top.produced = true;
                    let values: BTreeMap<String, Value> = bindings
                        .into_iter()
                        .filter(|(k, _)| !k.starts_with("__") && !k.starts_with('$'))
                        .filter_map(|(k, v)| Some((k, serde_json::to_value(&v).ok()?)))
                        .collect();
                    out.firings.push(firing(top, &values));
                }
                Event::BodyEnd { .. } => {
                    if let Some(frame) = stack.pop()
                        && frame.is_violation
                        && !frame.produced
                    {
                        out.misses.push(Miss {
                            file: frame.file.clone(),
                            line: frame.line,
                            rule: frame.rule.trim().to_owned(),
                            first_failed: frame.first_failed.map(|(line, text)| Expression {
                                line,
                                text,
                                values: BTreeMap::new(),
                            }),
                        });
                    }
                }
            }
        }
        // A body produces its violations once; the same output seen again (the set is
        // evaluated once per reference) is one firing.
        let mut seen = BTreeSet::new();
        out.firings
            .retain(|f| seen.insert((f.line, f.message.clone(), f.expressions.len())));
        Ok(out)
    }
}

fn firing(frame: &Frame, values: &BTreeMap<String, Value>) -> Firing {
    let passed: Vec<(u32, String)> = frame
        .stmts
        .iter()
        .filter(|(_, (_, ok))| *ok)
        .map(|((line, _), (text, _))| (*line, text.clone()))
        .collect();
    let expressions: Vec<Expression> = passed
        .iter()
        .map(|(line, text)| Expression {
            line: *line,
            text: text.clone(),
            values: identifiers(text)
                .into_iter()
                .filter_map(|id| values.get(&id).map(|v| (id, v.clone())))
                .collect(),
        })
        .collect();
    let message = values.get("msg").and_then(Value::as_str).map(str::to_owned);
    // Walk the assignments back from `msg` to the input fields it was built from.
    let mut wanted: Vec<String> = vec!["msg".into()];
    let mut done = BTreeSet::new();
    let mut inputs = Vec::new();
    while let Some(var) = wanted.pop() {
        if !done.insert(var.clone()) {
            continue;
        }
        for (_, text) in passed.iter().filter(|(_, t)| bound_by(t).contains(&var)) {
            for r in input_refs(text) {
                if !inputs.contains(&r) {
                    inputs.push(r);
                }
            }
            let rhs = text
                .split_once(":=")
                .or_else(|| text.split_once(" in "))
                .or_else(|| text.split_once('='))
                .map_or(text.as_str(), |(_, r)| r);
            wanted.extend(identifiers(rhs));
        }
    }
    Firing {
        file: frame.file.clone(),
        line: frame.line,
        rule: frame.rule.trim().to_owned(),
        message,
        expressions,
        inputs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_expressions() {
        assert_eq!(bound_by("msg := sprintf(\"%v\", [c.name])"), vec!["msg"]);
        assert_eq!(
            bound_by("some i, c in input.review.object.spec.containers"),
            vec!["i", "c"]
        );
        assert!(bound_by("c.securityContext.privileged == true").is_empty());
        let ids = identifiers("msg := sprintf(\"x %v\", [c.name, lib.origin(p)])");
        assert!(
            ids.contains("msg") && ids.contains("c") && ids.contains("p") && ids.contains("lib")
        );
        assert!(!ids.contains("name") && !ids.contains("x"));
        assert_eq!(
            input_refs("c := input.review.object.spec.containers[_]"),
            vec!["input.review.object.spec.containers[_]"]
        );
    }
}
