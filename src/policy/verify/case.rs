//! One suite case: the object under review, the inventory, and the assertions.

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::super::{PolicyHit, PolicySet, eval};
use crate::admission::AdmissionRequest;
use crate::request;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub name: String,
    /// A bare object (reviewed as a CREATE) or an AdmissionReview.
    object: String,
    /// Files of objects that make up `data.inventory` for this case.
    #[serde(default)]
    inventory: Vec<String>,
    #[serde(default)]
    assertions: Vec<Assertion>,
    #[serde(default)]
    pub skip: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Assertion {
    /// `yes` (at least one, the default), `no`, or an exact count. Kept as a raw value because
    /// YAML 1.1 readers turn a bare `yes`/`no` into a boolean.
    #[serde(default)]
    violations: Option<Value>,
    /// Only violations whose message matches this regular expression are counted.
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    AtLeastOne,
    None,
    Exactly(u64),
}

impl Expected {
    fn parse(v: Option<&Value>) -> Result<Expected, String> {
        match v {
            None | Some(Value::Null) => Ok(Expected::AtLeastOne),
            Some(Value::Bool(true)) => Ok(Expected::AtLeastOne),
            Some(Value::Bool(false)) => Ok(Expected::None),
            Some(Value::String(s)) if s == "yes" => Ok(Expected::AtLeastOne),
            Some(Value::String(s)) if s == "no" => Ok(Expected::None),
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                Ok(Expected::Exactly(n.as_u64().unwrap_or_default()))
            }
            Some(Value::String(s)) if s.parse::<u64>().is_ok() => {
                Ok(Expected::Exactly(s.parse().unwrap_or_default()))
            }
            Some(other) => Err(format!(
                "violations must be yes, no or a non-negative count, got {other}"
            )),
        }
    }

    fn holds(self, count: usize) -> bool {
        match self {
            Expected::AtLeastOne => count >= 1,
            Expected::None => count == 0,
            Expected::Exactly(n) => u64::try_from(count).is_ok_and(|c| c == n),
        }
    }

    fn describe(self) -> String {
        match self {
            Expected::AtLeastOne => "at least 1 violation".into(),
            Expected::None => "no violations".into(),
            Expected::Exactly(n) => format!("exactly {n} violation(s)"),
        }
    }
}

impl Case {
    /// Evaluate the case; `Err` says which assertion failed, what was expected and what came.
    pub fn run(&self, dir: &Path, set: &PolicySet) -> Result<(), String> {
        if self.assertions.is_empty() {
            return Err("case has no assertions".into());
        }
        let req = review_of(&super::resolve(dir, &self.object))?;
        let (inventory, namespaces) = self.inventory(dir)?;
        let namespace = namespaces.get(&req.namespace);
        let hits = if self.inventory.is_empty() {
            set.evaluate(&req, namespace)
        } else {
            set.with_inventory(inventory)?.evaluate(&req, namespace)
        };
        if let Some(err) = hits.iter().find(|h| eval::is_failure_message(&h.message)) {
            return Err(format!(
                "evaluation error: [{}] {}",
                err.policy, err.message
            ));
        }
        let mut failures = Vec::new();
        for (index, a) in self.assertions.iter().enumerate() {
            let expected = Expected::parse(a.violations.as_ref())
                .map_err(|e| format!("assertion {}: {e}", index + 1))?;
            let pattern = a
                .message
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| format!("assertion {}: message: {e}", index + 1))?;
            let counted: Vec<&PolicyHit> = hits
                .iter()
                .filter(|h| pattern.as_ref().is_none_or(|re| re.is_match(&h.message)))
                .collect();
            if !expected.holds(counted.len()) {
                let filter = a
                    .message
                    .as_deref()
                    .map(|m| format!(" matching /{m}/"))
                    .unwrap_or_default();
                failures.push(format!(
                    "assertion {}: expected {}{filter}, got {}{}",
                    index + 1,
                    expected.describe(),
                    counted.len(),
                    shown(&hits)
                ));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// `data.inventory` in Gatekeeper's layout (`cluster[apiVersion][kind][name]` and
    /// `namespace[ns][apiVersion][kind][name]`), and the Namespace objects by name.
    fn inventory(&self, dir: &Path) -> Result<(Value, Map<String, Value>), String> {
        let mut cluster: Objects = BTreeMap::new();
        let mut namespaced: BTreeMap<String, Objects> = BTreeMap::new();
        let mut namespaces = Map::new();
        for rel in &self.inventory {
            let path = super::resolve(dir, rel);
            for obj in read_documents(&path)? {
                let at = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
                let (api, kind, name, ns) = (
                    at("/apiVersion"),
                    at("/kind"),
                    at("/metadata/name"),
                    at("/metadata/namespace"),
                );
                if api.is_empty() || kind.is_empty() || name.is_empty() {
                    return Err(format!(
                        "{}: inventory objects need apiVersion, kind and metadata.name",
                        path.display()
                    ));
                }
                if api == "v1" && kind == "Namespace" {
                    namespaces.insert(name.to_owned(), obj.clone());
                }
                let root = if ns.is_empty() {
                    &mut cluster
                } else {
                    namespaced.entry(ns.to_owned()).or_default()
                };
                root.entry(api.to_owned())
                    .or_default()
                    .entry(kind.to_owned())
                    .or_default()
                    .insert(name.to_owned(), obj.clone());
            }
        }
        Ok((
            json!({"cluster": cluster, "namespace": namespaced}),
            namespaces,
        ))
    }
}

/// apiVersion → kind → name → object.
type Objects = BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>>;

fn shown(hits: &[PolicyHit]) -> String {
    if hits.is_empty() {
        return String::new();
    }
    let list: Vec<String> = hits
        .iter()
        .map(|h| format!("[{}] {}", h.policy, h.message))
        .collect();
    format!(" (all violations: {})", list.join(" | "))
}

fn read_documents(path: &Path) -> Result<Vec<Value>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    request::documents(&text).map_err(|e| format!("{shown}: {e}"))
}

/// The AdmissionRequest for a case's object file, as gator builds it (see
/// [`request::gator_request`]): an AdmissionReview is taken as given, a bare object is reviewed
/// the way gator reviews it.
fn review_of(path: &Path) -> Result<AdmissionRequest, String> {
    let shown = path.display();
    let docs = read_documents(path)?;
    let [doc] = <[Value; 1]>::try_from(docs).map_err(|d| {
        format!(
            "{shown}: expected exactly one object or AdmissionReview, found {}",
            d.len()
        )
    })?;
    let req = request::gator_request(doc).map_err(|e| format!("{shown}: {e}"))?;
    AdmissionRequest::from_given(req).map_err(|e| format!("{shown}: {e}"))
}
