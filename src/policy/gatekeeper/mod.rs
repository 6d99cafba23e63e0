//! Gatekeeper ConstraintTemplates and Constraints as a policy source.
//!
//! A template brings Rego (its package and libs); each Constraint of the template's kind becomes
//! one policy named after the Constraint, with the Constraint's `spec.parameters` as
//! `input.parameters`, its `spec.match` and `spec.enforcementAction`. They are compiled into the
//! same engine as native policies (see `set.rs`), so the `violation` contract is the same.
//!
//! `data.inventory` (Gatekeeper's replicated cluster state) is empty when serving: this webhook
//! does not replicate the cluster. `policy verify` fills it from a suite case's `inventory`.

mod constraint;
pub(in crate::policy) mod load;
mod matching;
mod template;

use serde_json::Value;

pub use matching::ConstraintMatch;

use super::meta::Metadata;
use super::schema::Schema;
use super::{LoadIssue, SourceFile};

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
                template::parse(file, doc, &origin).map(|t| parsed.templates.push(t))
            }
            ("constraints.gatekeeper.sh", _) => {
                constraint::parse(doc, kind, &origin).map(|c| parsed.constraints.push(c))
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

#[cfg(test)]
mod tests;
