//! Rego validation (`/validate`): Gatekeeper-compatible policies evaluated with regorus.
//!
//! Filled in by the policy work. Until then the store holds an empty set, so validation admits
//! everything and says so in `/readyz` (0 policies loaded).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admission::AdmissionRequest;

/// Policy settings (the `policy:` section of the configuration).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {}

impl PolicyConfig {
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// What a policy does when it finds a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Deny,
    Warn,
    Dryrun,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Warn => "warn",
            Action::Dryrun => "dryrun",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One violation found by one policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyHit {
    pub policy: String,
    pub action: Action,
    pub message: String,
}

/// Readiness of the policy set, for `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyStatus {
    pub loaded: bool,
    pub policies: usize,
    pub last_error: Option<String>,
}

pub struct PolicyStore {}

impl PolicyStore {
    pub fn empty() -> Self {
        PolicyStore {}
    }

    pub fn evaluate(&self, _req: &AdmissionRequest, _namespace: Option<&Value>) -> Vec<PolicyHit> {
        Vec::new()
    }

    pub fn status(&self) -> PolicyStatus {
        PolicyStatus {
            loaded: true,
            policies: 0,
            last_error: None,
        }
    }
}
