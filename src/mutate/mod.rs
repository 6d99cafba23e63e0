//! Pod mutation (`/mutate`): puts Sandbox pods into their isolation runtime and hardens them.
//!
//! Filled in by the mutation work (runtime profiles, hardening, network profile, bookkeeping).
//! Until then every pod passes unchanged, which is the documented behaviour of a webhook with
//! mutation switched off.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::admission::AdmissionRequest;
use crate::config::Config;

/// Mutation settings (the `mutation:` section of the configuration).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutationConfig {}

impl MutationConfig {
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// What mutation decided for one request.
#[derive(Debug, Clone, Default)]
pub struct MutationOutcome {
    /// RFC 6902 operations turning the request object into the mutated one.
    pub patch: Vec<json_patch::PatchOperation>,
    /// Human-readable list of what was changed (decision log).
    pub mutations: Vec<String>,
    pub warnings: Vec<String>,
    /// A refusal (e.g. an unknown runtime profile): the pod must not be admitted.
    pub denial: Option<String>,
    pub audit_annotations: BTreeMap<String, String>,
}

pub struct Mutator {}

impl Mutator {
    pub fn new(_config: &Config) -> Self {
        Mutator {}
    }

    pub async fn mutate(&self, _req: &AdmissionRequest) -> MutationOutcome {
        MutationOutcome::default()
    }
}
