//! What one review decided, as the recorders (decision log, events, metrics) and the encoder
//! see it. It sits below both the pipeline that makes decisions and the audit code that records
//! them, so neither imports the other.

use crate::admission::Response;
use crate::policy::PolicyHit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// What one review decided, with everything the log and the caller need.
#[derive(Debug, Clone)]
pub struct Decision {
    pub response: Response,
    pub hits: Vec<PolicyHit>,
    pub mutations: Vec<String>,
}

impl Decision {
    /// `allowed`, `warned` or `denied`, as counted in metrics and the log.
    pub fn label(&self) -> &'static str {
        if !self.response.allowed {
            "denied"
        } else if self.response.warnings.is_empty() {
            "allowed"
        } else {
            "warned"
        }
    }
}
