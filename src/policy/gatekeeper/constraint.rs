//! Reading a Constraint: name, parameters, match and enforcement action, as policy metadata.

use serde_json::{Map, Value};

use super::super::Action;
use super::super::meta::{FailurePolicy, Metadata};
use super::{Constraint, str_at};
use crate::admission::Operation;

pub fn parse(doc: &Value, kind: &str, origin: &str) -> Result<Constraint, String> {
    let name = str_at(doc, "/metadata/name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{kind} constraint has no metadata.name"))?;
    // The name is the policy's name in denials, metrics labels and audit annotations.
    if !super::super::meta::valid_policy_name(name) {
        return Err(format!(
            "{kind} {name:?}: a constraint name must be a Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253)"
        ));
    }
    let empty = Map::new();
    let spec = match doc.get("spec") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(format!("{kind} {name}: spec must be a mapping")),
    };
    for key in spec.keys() {
        if !matches!(key.as_str(), "match" | "parameters" | "enforcementAction") {
            return Err(format!(
                "{kind} {name}: spec.{key} is not supported by sandbox-admission (refused rather than ignored)"
            ));
        }
    }
    let action = match spec.get("enforcementAction").and_then(Value::as_str) {
        None | Some("deny") => Action::Deny,
        Some("warn") => Action::Warn,
        Some("dryrun") => Action::Dryrun,
        Some(other) => {
            return Err(format!(
                "{kind} {name}: enforcementAction {other:?} must be deny, warn or dryrun"
            ));
        }
    };
    let parameters = match spec.get("parameters") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(format!("{kind} {name}: spec.parameters must be a mapping")),
    };
    let (kinds, constraint_match) =
        super::matching::parse(spec.get("match")).map_err(|e| format!("{kind} {name}: {e}"))?;
    Ok(Constraint {
        kind: kind.to_owned(),
        origin: origin.to_owned(),
        meta: Metadata {
            name: Some(name.to_owned()),
            description: None,
            kinds,
            // Gatekeeper's own webhook is registered for CREATE and UPDATE by default: most
            // templates read `input.review.object`, which a DELETE does not have.
            operations: vec![Operation::Create, Operation::Update],
            parameters,
            parameters_schema: None,
            excluded_namespaces: Vec::new(),
            enforcement_action: action,
            failure_policy: FailurePolicy::Fail,
            profiles: Default::default(),
            constraint_match: Some(constraint_match),
        },
    })
}
