//! Policy metadata: the YAML file beside each policy module (`foo.rego` + `foo.yaml`).
//!
//! Unknown keys are errors, so a misspelt `excludedNamespace` never silently widens a policy.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::Action;
use super::gatekeeper::ConstraintMatch;
use super::schema::Schema;
use crate::admission::{AdmissionRequest, Operation};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Defaults to the file name without `.rego`.
    #[serde(default)]
    pub name: Option<String>,
    /// Accepted for the reader of the file; the engine has no use for it.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    pub kinds: Vec<KindMatch>,
    #[serde(default = "default_operations")]
    pub operations: Vec<Operation>,
    /// Becomes `input.parameters`.
    #[serde(default = "empty_object")]
    pub parameters: Value,
    /// OpenAPI-style schema the parameters must satisfy (checked at load).
    #[serde(default)]
    pub parameters_schema: Option<Schema>,
    /// Exact names, or prefixes ending in `*`.
    #[serde(default)]
    pub excluded_namespaces: Vec<String>,
    #[serde(default = "default_action")]
    pub enforcement_action: Action,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// What changes under a named profile (`policy.profile`, `serve --profile`): so the strict
    /// profile is the same files with other actions, never a second copy of the policies.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileOverride>,
    /// Set only for Gatekeeper Constraints: the rest of their `spec.match`.
    #[serde(skip)]
    pub constraint_match: Option<ConstraintMatch>,
}

/// A policy's settings under one profile; what is not given stays as in the rest of the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileOverride {
    /// `false` leaves the policy out of the set under this profile.
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub enforcement_action: Option<Action>,
    /// Merged key by key over `parameters`.
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// The profile every policy runs under unless configured otherwise.
pub const DEFAULT_PROFILE: &str = "default";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KindMatch {
    /// API group; `""` is the core group (Pods), `*` any group.
    pub group: String,
    /// Kind; `*` any kind.
    pub kind: String,
    /// Empty means every version.
    #[serde(default)]
    pub versions: Vec<String>,
}

/// What an evaluation error turns into: a denial (`fail`) or a warning (`ignore`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    #[default]
    Fail,
    Ignore,
}

fn default_operations() -> Vec<Operation> {
    vec![Operation::Create, Operation::Update]
}
fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}
fn default_action() -> Action {
    Action::Deny
}

impl Metadata {
    /// Parse and check a metadata file; the error says what is wrong (with a line when known).
    pub fn parse(text: &str) -> Result<Metadata, (Option<u32>, String)> {
        let meta: Metadata = serde_saphyr::from_str(text).map_err(|e| {
            let message = e.to_string();
            (line_of_yaml_error(&message), message)
        })?;
        meta.check().map_err(|m| (None, m))?;
        for (name, o) in &meta.profiles {
            if let Some(p) = &o.parameters
                && !p.is_object()
            {
                return Err((
                    None,
                    format!("profiles.{name}.parameters must be a mapping"),
                ));
            }
        }
        Ok(meta)
    }

    /// This policy as it runs under `profile`, or `None` when the profile leaves it out. The
    /// merged parameters are checked against the schema again.
    pub fn under_profile(mut self, profile: &str) -> Result<Option<Metadata>, String> {
        let Some(o) = self.profiles.get(profile).cloned() else {
            return Ok(Some(self));
        };
        if o.enabled == Some(false) {
            return Ok(None);
        }
        if let Some(action) = o.enforcement_action {
            self.enforcement_action = action;
        }
        if let (Some(Value::Object(extra)), Value::Object(params)) =
            (o.parameters, &mut self.parameters)
        {
            params.extend(extra);
        }
        self.check()
            .map_err(|m| format!("under profile {profile}: {m}"))?;
        Ok(Some(self))
    }

    fn check(&self) -> Result<(), String> {
        if let Some(name) = &self.name
            && !valid_policy_name(name)
        {
            return Err(format!(
                "name {name:?} must be lowercase letters, digits, '-' and '.' (a Kubernetes object name)"
            ));
        }
        if self.kinds.is_empty() {
            return Err("kinds must list at least one group/kind".into());
        }
        if self.operations.is_empty() {
            return Err("operations must not be empty".into());
        }
        if !self.parameters.is_object() {
            return Err("parameters must be a mapping".into());
        }
        if let Some(schema) = &self.parameters_schema {
            schema
                .check(&self.parameters, "parameters")
                .map_err(|e| format!("parameters do not match parametersSchema: {e}"))?;
        }
        for ns in &self.excluded_namespaces {
            let body = ns.strip_suffix('*').unwrap_or(ns);
            if body.is_empty() || body.contains('*') {
                return Err(format!(
                    "excludedNamespaces entry {ns:?} must be a name or a prefix ending in a single '*'"
                ));
            }
        }
        Ok(())
    }

    /// Does this policy judge `req`?
    pub fn applies_to(&self, req: &AdmissionRequest) -> bool {
        self.operations.contains(&req.operation)
            && self.kinds.iter().any(|k| k.matches(req))
            && !self.excludes_namespace(&req.namespace)
            && self
                .constraint_match
                .as_ref()
                .is_none_or(|m| m.matches(req))
    }

    fn excludes_namespace(&self, namespace: &str) -> bool {
        !namespace.is_empty()
            && self
                .excluded_namespaces
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => namespace.starts_with(prefix),
                    None => namespace == pattern,
                })
    }
}

impl KindMatch {
    fn matches(&self, req: &AdmissionRequest) -> bool {
        (self.group == "*" || self.group == req.kind.group)
            && (self.kind == "*" || self.kind == req.kind.kind)
            && (self.versions.is_empty() || self.versions.contains(&req.kind.version))
    }
}

/// Policy names appear in deny messages, metrics labels and audit annotations: keep them tame.
/// A constraint is named after its Kubernetes object name, so the rule is the API server's for
/// object names (an RFC 1123 subdomain: dot-separated DNS labels, at most 253 characters), which
/// admits names such as `psp-1.16` that Gatekeeper serves.
pub fn valid_policy_name(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label)
}

/// serde-saphyr reports positions as `line N`; pull the number out for `file:line` output.
pub(super) fn line_of_yaml_error(message: &str) -> Option<u32> {
    let rest = &message[message.find("line ")? + 5..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(group: &str, kind: &str, version: &str, op: &str, ns: &str) -> AdmissionRequest {
        AdmissionRequest::from_value(json!({
            "uid": "u", "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": "x"},
            "operation": op, "namespace": ns, "object": {}
        }))
        .unwrap()
    }

    #[test]
    fn defaults_and_matching() {
        let m = Metadata::parse(
            "kinds:\n- group: agents.x-k8s.io\n  kind: Sandbox\nexcludedNamespaces: [kube-system, team-*]\n",
        )
        .unwrap();
        assert_eq!(m.enforcement_action, Action::Deny);
        assert_eq!(m.failure_policy, FailurePolicy::Fail);
        assert!(m.applies_to(&req(
            "agents.x-k8s.io",
            "Sandbox",
            "v1alpha1",
            "CREATE",
            "ns"
        )));
        assert!(m.applies_to(&req(
            "agents.x-k8s.io",
            "Sandbox",
            "v1beta1",
            "UPDATE",
            "ns"
        )));
        assert!(!m.applies_to(&req(
            "agents.x-k8s.io",
            "Sandbox",
            "v1beta1",
            "DELETE",
            "ns"
        )));
        assert!(!m.applies_to(&req("", "Pod", "v1", "CREATE", "ns")));
        assert!(!m.applies_to(&req(
            "agents.x-k8s.io",
            "Sandbox",
            "v1beta1",
            "CREATE",
            "kube-system"
        )));
        assert!(!m.applies_to(&req(
            "agents.x-k8s.io",
            "Sandbox",
            "v1beta1",
            "CREATE",
            "team-a"
        )));
        assert!(m.applies_to(&req(
            "agents.x-k8s.io",
            "Sandbox",
            "v1beta1",
            "CREATE",
            "kube"
        )));
    }

    #[test]
    fn versions_narrow_the_match() {
        let m = Metadata::parse(
            "kinds:\n- {group: agents.x-k8s.io, kind: Sandbox, versions: [v1beta1]}\n",
        )
        .unwrap();
        assert!(!m.applies_to(&req(
            "agents.x-k8s.io",
            "Sandbox",
            "v1alpha1",
            "CREATE",
            "n"
        )));
        assert!(m.applies_to(&req("agents.x-k8s.io", "Sandbox", "v1beta1", "CREATE", "n")));
    }

    #[test]
    fn invalid_metadata_is_refused_with_a_reason() {
        let cases = [
            ("kinds: []\n", "at least one"),
            (
                "kinds: [{group: a, kind: B}]\nenforcementAction: block\n",
                "block",
            ),
            (
                "kinds: [{group: a, kind: B}]\nexcludedNamespace: [x]\n",
                "excludedNamespace",
            ),
            ("kinds: [{group: a, kind: B}]\nname: Bad_Name\n", "Bad_Name"),
            (
                "kinds: [{group: a, kind: B}]\nexcludedNamespaces: ['*']\n",
                "prefix",
            ),
            ("kinds: [{group: a, kind: B}]\nparameters: [1]\n", "mapping"),
        ];
        for (text, needle) in cases {
            let (_, msg) = Metadata::parse(text).unwrap_err();
            assert!(msg.contains(needle), "{text:?}: {msg}");
        }
    }

    #[test]
    fn policy_names_are_kubernetes_object_names() {
        for ok in ["a", "psp-1.16", "verify-1.16", "a.b.c", "x1-2"] {
            assert!(valid_policy_name(ok), "{ok}");
        }
        let long = "a".repeat(254);
        for bad in [
            "",
            "A",
            "a_b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a.-b",
            long.as_str(),
        ] {
            assert!(!valid_policy_name(bad), "{bad}");
        }
    }
}
