//! Configuration: one YAML file (or the embedded default), with command-line flags and environment
//! variables layered on top by `cli`. Unknown keys are errors, so a typo never silently disables a
//! protection.

pub mod limits;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::audit::DecisionLogConfig;
use crate::mutate::MutationConfig;
use crate::policy::PolicyConfig;

/// The configuration compiled into the binary: what `serve` uses with no `--config`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/default.yaml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// HTTPS address for `/mutate` and `/validate`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Plain-HTTP address for `/healthz`, `/readyz` and `/metrics`.
    #[serde(default = "default_health_listen")]
    pub health_listen: SocketAddr,
    #[serde(default)]
    pub tls: TlsConfig,
    /// The Service the API server calls: names the generated certificate's SANs.
    #[serde(default)]
    pub service: ServiceRef,
    /// Prefix of every label and annotation this product writes.
    #[serde(default = "default_prefix")]
    pub label_prefix: String,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Largest request body accepted (the API server sends at most 3 MiB objects).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Deadline for a review when the API server sends no `?timeout=`.
    #[serde(default = "default_timeout")]
    pub default_timeout_seconds: u64,
    /// How long a connection may take to send its request headers (slowloris guard).
    #[serde(default = "default_header_timeout")]
    pub header_timeout_seconds: u64,
    /// How long shutdown waits for in-flight requests.
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: u64,
    /// What a flood of requests may hold at once (body bytes, reviews decided, body deadline).
    #[serde(default)]
    pub limits: limits::LimitsConfig,
    #[serde(default)]
    pub decision_log: DecisionLogConfig,
    /// Kubernetes Events for denials and warnings.
    #[serde(default)]
    pub events: crate::audit::events::EventsConfig,
    #[serde(default)]
    pub mutation: MutationConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub validation: ValidationConfig,
    /// Kinds kept in `data.inventory` for referential policies (Gatekeeper Config `syncOnly`
    /// entries), watched when the server has cluster access.
    #[serde(default = "default_sync")]
    pub sync: Vec<crate::cluster::SyncEntry>,
    /// The background audit of existing objects into PolicyReports.
    #[serde(default)]
    pub audit: AuditConfig,
    /// A candidate policy set judged beside the serving one (`--shadow-policies`).
    #[serde(default)]
    pub shadow: ShadowConfig,
    #[serde(default)]
    pub admin: AdminConfig,
}

/// `audit:`: judge what already runs, periodically and after every policy reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// Off by default: it needs cluster access and the PolicyReport CRD and RBAC of
    /// `manifests/audit/`.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_audit_interval")]
    pub interval_seconds: u64,
    /// Most results one PolicyReport holds; a report over it keeps the first ones and says so.
    #[serde(default = "default_audit_max_results")]
    pub max_results_per_report: usize,
    /// The Lease (in the Service's namespace) that lets one replica audit at a time.
    #[serde(default = "default_audit_lease")]
    pub lease_name: String,
    /// How long a Lease holder that stops renewing keeps others out.
    #[serde(default = "default_audit_lease_seconds")]
    pub lease_duration_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: false,
            interval_seconds: default_audit_interval(),
            max_results_per_report: default_audit_max_results(),
            lease_name: default_audit_lease(),
            lease_duration_seconds: default_audit_lease_seconds(),
        }
    }
}

impl AuditConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_seconds < 10 || self.interval_seconds > 86_400 {
            return Err("audit.intervalSeconds must be within 10..=86400".into());
        }
        if self.max_results_per_report == 0 || self.max_results_per_report > 10_000 {
            return Err("audit.maxResultsPerReport must be within 1..=10000 (a PolicyReport is one etcd object, at most 1.5 MiB)".into());
        }
        if self.lease_duration_seconds < 5 || self.lease_duration_seconds > 3_600 {
            return Err("audit.leaseDurationSeconds must be within 5..=3600".into());
        }
        if self.lease_name.is_empty() {
            return Err("audit.leaseName must not be empty".into());
        }
        Ok(())
    }
}

/// What the shipped referential policies read: warm pools (a claim's pool, the namespace's
/// replica total), templates (a pool's template) and Services (a Sandbox's Service name).
fn default_sync() -> Vec<crate::cluster::SyncEntry> {
    use crate::cluster::SyncEntry;
    vec![
        SyncEntry::new("extensions.agents.x-k8s.io", "v1beta1", "SandboxWarmPool"),
        SyncEntry::new("extensions.agents.x-k8s.io", "v1beta1", "SandboxTemplate"),
        SyncEntry::new("", "v1", "Service"),
    ]
}
fn default_audit_interval() -> u64 {
    300
}
fn default_audit_max_results() -> usize {
    1000
}
fn default_audit_lease() -> String {
    "sandbox-admission-audit".into()
}
fn default_audit_lease_seconds() -> u64 {
    30
}

/// The read-only admin page (docs/admins.md): off unless `listen` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminConfig {
    /// Plain-HTTP address of the page; a non-loopback address needs `tokenFile`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// A file holding the bearer token the page asks for (`Authorization: Bearer …`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Decisions kept in memory for the page.
    #[serde(default = "default_admin_recent")]
    pub recent: usize,
}

fn default_admin_recent() -> usize {
    1000
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            token_file: None,
            recent: default_admin_recent(),
        }
    }
}

/// The shadow set: judged on live `/validate` traffic after each answer is sent, never
/// changing or delaying it; disagreements go to the decision log and metrics (docs/admins.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShadowConfig {
    /// Policy directory of the candidate set, watched and hot-reloaded like the serving set's.
    #[serde(default)]
    pub policies: Option<PathBuf>,
    /// Shadow evaluations waiting or running at once; beyond this a review is not shadowed,
    /// only counted (`sandbox_admission_shadow_dropped_total`), so load never queues up.
    #[serde(default = "default_shadow_pending")]
    pub max_pending: usize,
}

fn default_shadow_pending() -> usize {
    64
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            policies: None,
            max_pending: default_shadow_pending(),
        }
    }
}

/// How `/validate` judges Sandboxes and SandboxTemplates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidationConfig {
    /// Unset: `effective`, except under the `strict` profile, which reproduces upstream's
    /// ValidatingAdmissionPolicy and so judges what was written.
    #[serde(default)]
    pub judge: Option<Judge>,
}

/// What the pod policies see for a Sandbox or SandboxTemplate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Judge {
    /// The pod the controller will create, as this webhook's mutation will leave it.
    Effective,
    /// `spec.podTemplate.spec` exactly as the author wrote it.
    AsWritten,
}

impl Judge {
    pub fn as_str(self) -> &'static str {
        match self {
            Judge::Effective => "effective",
            Judge::AsWritten => "as-written",
        }
    }
}

/// The profile that reproduces upstream's ValidatingAdmissionPolicy example.
pub const STRICT_PROFILE: &str = "strict";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Directory holding `ca.crt`, `tls.crt`, `tls.key` (a Kubernetes TLS Secret's layout).
    #[serde(default)]
    pub cert_dir: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// When set, clients must present a certificate signed by this CA.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRef {
    pub name: String,
    pub namespace: String,
}

impl Config {
    /// How Sandboxes and templates are judged, after the profile's default.
    pub fn judge(&self) -> Judge {
        match self.validation.judge {
            Some(j) => j,
            None if self.policy.profile == STRICT_PROFILE => Judge::AsWritten,
            None => Judge::Effective,
        }
    }
}

impl Default for ServiceRef {
    fn default() -> Self {
        ServiceRef {
            name: "sandbox-admission".into(),
            namespace: "sandbox-admission".into(),
        }
    }
}

impl ServiceRef {
    /// The DNS names the API server may use to reach the Service.
    pub fn dns_names(&self) -> Vec<String> {
        let (n, ns) = (&self.name, &self.namespace);
        vec![
            n.clone(),
            format!("{n}.{ns}"),
            format!("{n}.{ns}.svc"),
            format!("{n}.{ns}.svc.cluster.local"),
        ]
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}
fn default_health_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9090))
}
fn default_prefix() -> String {
    "sandbox-admission.io/".into()
}
fn default_max_body() -> usize {
    3 * 1024 * 1024
}
fn default_timeout() -> u64 {
    10
}
fn default_header_timeout() -> u64 {
    5
}
fn default_grace() -> u64 {
    20
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(EMBEDDED_DEFAULT, "(embedded default)")
    }

    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = serde_saphyr::from_str(text).map_err(|e| ConfigError::Invalid {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            origin: origin.to_owned(),
            message,
        })?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Checks that serde cannot express.
    fn validate(&self) -> Result<(), String> {
        if !self.label_prefix.ends_with('/') || self.label_prefix.len() < 2 {
            return Err(format!(
                "labelPrefix {:?} must be a DNS subdomain followed by '/'",
                self.label_prefix
            ));
        }
        for reserved in ["agents.x-k8s.io/", "extensions.agents.x-k8s.io/"] {
            if self.label_prefix == reserved {
                return Err(format!(
                    "labelPrefix {reserved:?} is reserved for the upstream controller"
                ));
            }
        }
        if self.max_body_bytes < 1024 {
            return Err("maxBodyBytes must be at least 1024".into());
        }
        if self.default_timeout_seconds == 0 || self.default_timeout_seconds > 30 {
            return Err(
                "defaultTimeoutSeconds must be within 1..=30 (the API server's range)".into(),
            );
        }
        self.limits.validate(self.max_body_bytes)?;
        self.decision_log.validate()?;
        self.events.validate()?;
        self.mutation.validate()?;
        self.policy.validate()?;
        for entry in &self.sync {
            entry.validate()?;
        }
        self.audit.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = Config::embedded().unwrap();
        assert_eq!(c.listen.port(), 8443);
        assert_eq!(c.health_listen.port(), 9090);
        assert_eq!(c.label_prefix, "sandbox-admission.io/");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::parse("listne: 0.0.0.0:1\n", "t").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn reserved_prefix_is_refused() {
        let err = Config::parse("labelPrefix: agents.x-k8s.io/\n", "t").unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }
}
