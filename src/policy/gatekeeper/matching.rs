//! A Constraint's `spec.match`: which requests the constraint judges.
//!
//! Only the fields this engine can decide from the request alone are accepted; any other key
//! (`namespaceSelector`, …) is refused at load, because ignoring it would widen the constraint.

use serde_json::Value;

use crate::admission::AdmissionRequest;

use super::super::meta::KindMatch;

/// `spec.match` without `kinds` (those become the policy's [`KindMatch`] list).
#[derive(Debug, Clone, Default)]
pub struct ConstraintMatch {
    /// Empty means every namespace. Exact names, `prefix*` or `*suffix`.
    pub namespaces: Vec<String>,
    pub excluded_namespaces: Vec<String>,
    pub label_selector: Option<LabelSelector>,
    /// `metadata.name` of the object, exact or `prefix*` / `*suffix`.
    pub name: Option<String>,
    pub scope: Scope,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    Any,
    Cluster,
    Namespaced,
}

#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    pub match_labels: Vec<(String, String)>,
    pub match_expressions: Vec<Expression>,
}

#[derive(Debug, Clone)]
pub struct Expression {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Parse `spec.match` into the kinds it names and the rest of the criteria.
pub fn parse(spec_match: Option<&Value>) -> Result<(Vec<KindMatch>, ConstraintMatch), String> {
    let mut kinds = Vec::new();
    let mut out = ConstraintMatch::default();
    let Some(m) = spec_match.filter(|v| !v.is_null()) else {
        kinds.push(any_kind());
        return Ok((kinds, out));
    };
    let map = m.as_object().ok_or("spec.match must be a mapping")?;
    for (key, value) in map {
        match key.as_str() {
            "kinds" => kinds = parse_kinds(value)?,
            "namespaces" => out.namespaces = strings(value, "spec.match.namespaces")?,
            "excludedNamespaces" => {
                out.excluded_namespaces = strings(value, "spec.match.excludedNamespaces")?;
            }
            "labelSelector" => out.label_selector = Some(parse_selector(value)?),
            "name" => {
                out.name = Some(
                    value
                        .as_str()
                        .ok_or("spec.match.name must be a string")?
                        .to_owned(),
                );
            }
            "scope" => {
                out.scope = match value.as_str() {
                    Some("*") => Scope::Any,
                    Some("Cluster") => Scope::Cluster,
                    Some("Namespaced") => Scope::Namespaced,
                    _ => {
                        return Err(format!(
                            "spec.match.scope {value} must be *, Cluster or Namespaced"
                        ));
                    }
                };
            }
            "source" if matches!(value.as_str(), Some("All" | "Original")) => {}
            other => {
                return Err(format!(
                    "spec.match.{other} is not supported by sandbox-admission (refused rather than ignored, which would widen the constraint)"
                ));
            }
        }
    }
    if kinds.is_empty() {
        kinds.push(any_kind());
    }
    Ok((kinds, out))
}

fn any_kind() -> KindMatch {
    KindMatch {
        group: "*".into(),
        kind: "*".into(),
        versions: Vec::new(),
    }
}

/// `kinds: [{apiGroups: [...], kinds: [...]}]`; an empty or missing list means "any".
fn parse_kinds(value: &Value) -> Result<Vec<KindMatch>, String> {
    let list = value.as_array().ok_or("spec.match.kinds must be a list")?;
    let mut out = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("spec.match.kinds[{i}]");
        let groups = match entry.get("apiGroups") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => strings(v, &format!("{at}.apiGroups"))?,
        };
        let names = match entry.get("kinds") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => strings(v, &format!("{at}.kinds"))?,
        };
        let groups = if groups.is_empty() {
            vec!["*".into()]
        } else {
            groups
        };
        let names = if names.is_empty() {
            vec!["*".into()]
        } else {
            names
        };
        for group in &groups {
            for kind in &names {
                out.push(KindMatch {
                    group: group.clone(),
                    kind: kind.clone(),
                    versions: Vec::new(),
                });
            }
        }
    }
    Ok(out)
}

fn strings(value: &Value, at: &str) -> Result<Vec<String>, String> {
    let list = value
        .as_array()
        .ok_or_else(|| format!("{at} must be a list of strings"))?;
    list.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{at} must be a list of strings, found {v}"))
        })
        .collect()
}

fn parse_selector(value: &Value) -> Result<LabelSelector, String> {
    let map = value
        .as_object()
        .ok_or("spec.match.labelSelector must be a mapping")?;
    let mut sel = LabelSelector::default();
    for (key, v) in map {
        match key.as_str() {
            "matchLabels" => {
                let labels = v
                    .as_object()
                    .ok_or("labelSelector.matchLabels must be a mapping")?;
                for (k, val) in labels {
                    let val = val
                        .as_str()
                        .ok_or_else(|| format!("labelSelector.matchLabels.{k} must be a string"))?;
                    sel.match_labels.push((k.clone(), val.to_owned()));
                }
            }
            "matchExpressions" => {
                let list = v
                    .as_array()
                    .ok_or("labelSelector.matchExpressions must be a list")?;
                for (i, e) in list.iter().enumerate() {
                    sel.match_expressions.push(parse_expression(e, i)?);
                }
            }
            other => {
                return Err(format!(
                    "labelSelector.{other} is not a label selector field"
                ));
            }
        }
    }
    Ok(sel)
}

fn parse_expression(e: &Value, i: usize) -> Result<Expression, String> {
    let at = format!("labelSelector.matchExpressions[{i}]");
    let key = e
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.key must be a string"))?
        .to_owned();
    let operator = match e.get("operator").and_then(Value::as_str) {
        Some("In") => Operator::In,
        Some("NotIn") => Operator::NotIn,
        Some("Exists") => Operator::Exists,
        Some("DoesNotExist") => Operator::DoesNotExist,
        other => {
            return Err(format!(
                "{at}.operator {other:?} must be In, NotIn, Exists or DoesNotExist"
            ));
        }
    };
    let values = match e.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => strings(v, &format!("{at}.values"))?,
    };
    if matches!(operator, Operator::In | Operator::NotIn) && values.is_empty() {
        return Err(format!("{at}: operator In/NotIn needs values"));
    }
    Ok(Expression {
        key,
        operator,
        values,
    })
}

impl ConstraintMatch {
    /// Does the constraint judge `req`? (Kinds and operations are checked by the caller.)
    pub fn matches(&self, req: &AdmissionRequest) -> bool {
        // A Namespace object is "in" the namespace it names, as Gatekeeper treats it.
        let namespace = if req.kind.group.is_empty() && req.kind.kind == "Namespace" {
            req.name.as_str()
        } else {
            req.namespace.as_str()
        };
        let scoped_ok = match self.scope {
            Scope::Any => true,
            Scope::Cluster => req.namespace.is_empty(),
            Scope::Namespaced => !req.namespace.is_empty(),
        };
        // Cluster-scoped objects are never filtered by namespace lists (Gatekeeper's rule).
        let ns_ok = namespace.is_empty()
            || ((self.namespaces.is_empty() || self.namespaces.iter().any(|p| glob(p, namespace)))
                && !self.excluded_namespaces.iter().any(|p| glob(p, namespace)));
        let name_ok = self.name.as_deref().is_none_or(|p| glob(p, &req.name));
        let labels_ok = self.label_selector.as_ref().is_none_or(|sel| {
            // Either the new or the old object may carry the labels (DELETE has only the old).
            [req.object(), req.old_object()]
                .into_iter()
                .flatten()
                .any(|obj| sel.matches(obj.pointer("/metadata/labels")))
        });
        scoped_ok && ns_ok && name_ok && labels_ok
    }
}

impl LabelSelector {
    fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.match_labels
            .iter()
            .all(|(k, v)| get(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|e| {
                let have = get(&e.key);
                match e.operator {
                    Operator::In => have.is_some_and(|h| e.values.iter().any(|v| v == h)),
                    Operator::NotIn => have.is_none_or(|h| !e.values.iter().any(|v| v == h)),
                    Operator::Exists => have.is_some(),
                    Operator::DoesNotExist => have.is_none(),
                }
            })
    }
}

/// Gatekeeper's namespace/name globs: exact, `prefix*` or `*suffix`.
fn glob(pattern: &str, value: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else {
        pattern == value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(ns: &str, labels: Value) -> AdmissionRequest {
        AdmissionRequest::from_value(json!({
            "uid": "u", "kind": {"group": "agents.x-k8s.io", "version": "v1alpha1", "kind": "Sandbox"},
            "resource": {"group": "agents.x-k8s.io", "version": "v1alpha1", "resource": "sandboxes"},
            "operation": "CREATE", "namespace": ns, "name": "s",
            "object": {"metadata": {"name": "s", "labels": labels}}
        }))
        .unwrap()
    }

    #[test]
    fn namespaces_labels_and_unknown_fields() {
        let (kinds, m) = parse(Some(&json!({
            "kinds": [{"apiGroups": ["agents.x-k8s.io"], "kinds": ["Sandbox", "SandboxTemplate"]}],
            "namespaces": ["team-*"], "excludedNamespaces": ["*-sys"],
            "labelSelector": {"matchLabels": {"a": "1"},
                              "matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["x"]}]}
        })))
        .unwrap();
        assert_eq!(kinds.len(), 2);
        assert!(m.matches(&req("team-a", json!({"a": "1"}))));
        assert!(!m.matches(&req("team-a", json!({"a": "1", "b": "x"}))));
        assert!(!m.matches(&req("other", json!({"a": "1"}))));
        assert!(!m.matches(&req("team-sys", json!({"a": "1"}))));
        assert!(!m.matches(&req("team-a", json!({}))));
        let err = parse(Some(&json!({"namespaceSelector": {}}))).unwrap_err();
        assert!(err.contains("namespaceSelector"), "{err}");
        let (kinds, _) = parse(None).unwrap();
        assert_eq!(
            (kinds[0].group.as_str(), kinds[0].kind.as_str()),
            ("*", "*")
        );
    }
}
