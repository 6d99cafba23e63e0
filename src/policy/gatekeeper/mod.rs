//! Gatekeeper ConstraintTemplates and Constraints as a policy source.
//!
//! A template brings Rego (its package and libs); each Constraint of the template's kind becomes
//! one policy named after the Constraint, with the Constraint's `spec.parameters` as
//! `input.parameters`, its `spec.match` and `spec.enforcementAction`. They are compiled into the
//! same engine as native policies (see `set.rs`), so the `violation` contract is the same.
//!
//! `data.inventory` (Gatekeeper's replicated cluster state) is empty when serving: this webhook
//! does not replicate the cluster. `policy verify` fills it from a suite case's `inventory`.

pub(in crate::policy) mod load;
mod matching;

use serde_json::{Map, Value};

pub use matching::ConstraintMatch;

use super::meta::{FailurePolicy, Metadata};
use super::schema::Schema;
use super::{Action, LoadIssue, SourceFile};
use crate::admission::Operation;

/// The only Gatekeeper target this webhook implements.
const ADMISSION_TARGET: &str = "admission.k8s.gatekeeper.sh";

/// A ConstraintTemplate's Rego, ready to be added to the engine.
#[derive(Debug, Clone)]
pub struct Template {
    /// `spec.crd.spec.names.kind`: the kind of its Constraints.
    pub kind: String,
    /// Where it was read, for messages: `file#document`.
    pub origin: String,
    pub rego: SourceFile,
    pub libs: Vec<SourceFile>,
    /// `openAPIV3Schema` of the parameters, when it is in the subset the engine checks.
    pub schema: Option<Schema>,
}

/// One Constraint: a policy's metadata, and the template kind it instantiates.
#[derive(Debug, Clone)]
pub struct Constraint {
    pub kind: String,
    pub origin: String,
    pub meta: Metadata,
}

/// What a Kubernetes-object YAML file in a policy directory holds.
#[derive(Debug, Default)]
pub struct Parsed {
    pub templates: Vec<Template>,
    pub constraints: Vec<Constraint>,
}

/// Does this YAML text hold Kubernetes objects (documents with a `kind`)? Native policy metadata
/// never has a `kind` key (it has `kinds`), which is how the two are told apart.
pub fn holds_objects(docs: &[Value]) -> bool {
    docs.iter()
        .any(|d| d.get("kind").is_some_and(Value::is_string))
}

/// Parse every document of a YAML file; errors name the file.
pub fn documents(file: &SourceFile) -> Result<Vec<Value>, LoadIssue> {
    serde_saphyr::from_multiple::<Value>(&file.text).map_err(|e| {
        let message = e.to_string();
        LoadIssue {
            file: file.path.clone(),
            line: super::meta::line_of_yaml_error(&message),
            message: format!("invalid YAML: {message}"),
        }
    })
}

/// Read the templates and constraints of one file; every bad document is reported.
pub fn parse_file(file: &SourceFile, docs: &[Value]) -> Result<Parsed, Vec<LoadIssue>> {
    let mut parsed = Parsed::default();
    let mut issues = Vec::new();
    for (index, doc) in docs.iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let origin = format!("{}#{}", file.path, index + 1);
        let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        let group = api.split_once('/').map_or("", |(g, _)| g);
        let result = match (group, kind) {
            ("templates.gatekeeper.sh", "ConstraintTemplate") => {
                template(file, doc, &origin).map(|t| parsed.templates.push(t))
            }
            ("constraints.gatekeeper.sh", _) => {
                constraint(doc, kind, &origin).map(|c| parsed.constraints.push(c))
            }
            // Gatekeeper's sync Config only feeds `data.inventory`, which is empty when serving.
            ("config.gatekeeper.sh", "Config") => Ok(()),
            _ => Err(format!(
                "kind {kind:?} (apiVersion {api:?}) is not a policy: expected a ConstraintTemplate \
                 (templates.gatekeeper.sh) or a Constraint (constraints.gatekeeper.sh)"
            )),
        };
        if let Err(message) = result {
            issues.push(LoadIssue {
                file: file.path.clone(),
                line: None,
                message: format!("document {}: {message}", index + 1),
            });
        }
    }
    if issues.is_empty() {
        Ok(parsed)
    } else {
        Err(issues)
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn template(file: &SourceFile, doc: &Value, origin: &str) -> Result<Template, String> {
    let name = str_at(doc, "/metadata/name").unwrap_or("");
    let kind = str_at(doc, "/spec/crd/spec/names/kind")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| format!("ConstraintTemplate {name:?} has no spec.crd.spec.names.kind"))?;
    if !name.is_empty() && name != kind.to_ascii_lowercase() {
        return Err(format!(
            "ConstraintTemplate {name:?}: metadata.name must be {:?} (the kind in lower case), as Gatekeeper requires",
            kind.to_ascii_lowercase()
        ));
    }
    let targets = doc
        .pointer("/spec/targets")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("ConstraintTemplate {kind}: spec.targets must be a list"))?;
    let [target] = targets.as_slice() else {
        return Err(format!(
            "ConstraintTemplate {kind}: spec.targets must hold exactly one target, found {}",
            targets.len()
        ));
    };
    let target_name = str_at(target, "/target").unwrap_or("");
    if target_name != ADMISSION_TARGET {
        return Err(format!(
            "ConstraintTemplate {kind}: target {target_name:?} is not supported (only {ADMISSION_TARGET})"
        ));
    }
    let (rego, libs) = rego_of(target, kind)?;
    let schema = doc
        .pointer("/spec/crd/spec/validation/openAPIV3Schema")
        .filter(|s| !s.is_null())
        .and_then(|s| serde_json::from_value::<Schema>(s.clone()).ok());
    let module = |text: &str, path: String| SourceFile {
        text: align(&file.text, text),
        path,
    };
    Ok(Template {
        kind: kind.to_owned(),
        origin: origin.to_owned(),
        rego: module(rego, origin.to_owned()),
        libs: libs
            .iter()
            .enumerate()
            .map(|(i, l)| module(l, format!("{origin}.libs{}", i + 1)))
            .collect(),
        schema,
    })
}

/// The Rego source and libs of a target: `rego`/`libs`, or the `code[]` entry with engine Rego.
fn rego_of<'a>(target: &'a Value, kind: &str) -> Result<(&'a str, Vec<&'a str>), String> {
    let libs_of = |v: Option<&'a Value>| -> Result<Vec<&'a str>, String> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(list)) => list
                .iter()
                .map(|l| {
                    l.as_str()
                        .ok_or_else(|| format!("ConstraintTemplate {kind}: libs must be strings"))
                })
                .collect(),
            Some(_) => Err(format!("ConstraintTemplate {kind}: libs must be a list")),
        }
    };
    if let Some(rego) = target
        .get("rego")
        .and_then(Value::as_str)
        .filter(|r| !r.trim().is_empty())
    {
        return Ok((rego, libs_of(target.get("libs"))?));
    }
    let code = match target.get("code") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(list)) => list.as_slice(),
        Some(_) => return Err(format!("ConstraintTemplate {kind}: code must be a list")),
    };
    if let Some(entry) = code.iter().find(|c| str_at(c, "/engine") == Some("Rego")) {
        let rego = str_at(entry, "/source/rego")
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| {
                format!("ConstraintTemplate {kind}: code engine Rego has no source.rego")
            })?;
        if let Some(v) = str_at(entry, "/source/version")
            && v != "v0"
            && v != "v1"
        {
            return Err(format!(
                "ConstraintTemplate {kind}: source.version {v:?} must be v0 or v1"
            ));
        }
        return Ok((rego, libs_of(entry.pointer("/source/libs"))?));
    }
    let engines: Vec<&str> = code.iter().filter_map(|c| str_at(c, "/engine")).collect();
    if engines.is_empty() {
        Err(format!(
            "ConstraintTemplate {kind}: target has no rego and no code"
        ))
    } else {
        Err(format!(
            "ConstraintTemplate {kind} is unsupported: it has only {} code, and sandbox-admission evaluates Rego only \
             (refused rather than skipped, so its constraints are never silently passed)",
            engines.join(", ")
        ))
    }
}

/// Prefix `rego` with blank lines so its line numbers are those of the YAML file it came from,
/// when its first line appears exactly once there. Blank lines change nothing in Rego.
fn align(yaml: &str, rego: &str) -> String {
    let Some((first_index, first)) = rego.lines().enumerate().find(|(_, l)| !l.trim().is_empty())
    else {
        return rego.to_owned();
    };
    let wanted = first.trim();
    let mut hits = yaml
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == wanted)
        .map(|(i, _)| i);
    match (hits.next(), hits.next()) {
        (Some(at), None) if at >= first_index => {
            format!("{}{rego}", "\n".repeat(at - first_index))
        }
        _ => rego.to_owned(),
    }
}

fn constraint(doc: &Value, kind: &str, origin: &str) -> Result<Constraint, String> {
    let name = str_at(doc, "/metadata/name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{kind} constraint has no metadata.name"))?;
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
        matching::parse(spec.get("match")).map_err(|e| format!("{kind} {name}: {e}"))?;
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
            constraint_match: Some(constraint_match),
        },
    })
}

#[cfg(test)]
mod tests;
