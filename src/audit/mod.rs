//! The decision log: one JSON line per admission decision, for cluster admins to audit.

pub mod log;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::PolicyHit;

pub use log::DecisionLog;

/// One decision, as written to the log and read back by `audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    pub time: DateTime<Utc>,
    pub uid: String,
    pub endpoint: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub dry_run: bool,
    pub allowed: bool,
    /// `allowed`, `warned` (allowed with warnings) or `denied`.
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub policies: Vec<PolicyHit>,
    #[serde(default)]
    pub mutations: Vec<String>,
    #[serde(default)]
    pub latency_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}
