//! The decision log: one JSON line per admission decision, for cluster admins to audit; and
//! reading back the background audit's PolicyReports (`audit --reports`).

pub mod cli;
pub mod events;
pub mod log;
pub mod query;
pub mod recent;
mod report;
pub mod reports;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admission::AdmissionRequest;
use crate::policy::PolicyHit;

pub use log::{DecisionLog, DecisionLogConfig};

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
    /// On a shadow record (`endpoint: shadow`): how the shadow set's verdict (the record's own
    /// `decision` and `policies`) differs from the live answer to the same `uid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<crate::disagreement::ShadowDetail>,
}

/// The object body for a record written with `includeObjects` (`--log-objects`). A Secret's
/// `data` and `stringData` never reach the log, whatever the setting: the log is read by people
/// who may not read Secrets.
pub fn loggable_object(req: &AdmissionRequest) -> Option<Value> {
    let mut object = req.object().or_else(|| req.old_object())?.clone();
    if req.kind.group.is_empty()
        && req.kind.kind == "Secret"
        && let Some(map) = object.as_object_mut()
    {
        for field in ["data", "stringData"] {
            if let Some(v) = map.get_mut(field) {
                *v = Value::String("(redacted)".into());
            }
        }
    }
    Some(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_data_is_never_logged() {
        let req = AdmissionRequest::from_value(json!({
            "uid": "u", "operation": "CREATE",
            "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "object": {"kind": "Secret", "metadata": {"name": "s"},
                       "data": {"k": "c2VjcmV0"}, "stringData": {"k": "secret"}}
        }))
        .unwrap();
        let logged = loggable_object(&req).unwrap();
        assert_eq!(logged["metadata"]["name"], "s");
        assert_eq!(logged["data"], "(redacted)");
        assert_eq!(logged["stringData"], "(redacted)");
        assert!(!logged.to_string().contains("secret\""));
    }
}
