//! The `mutation:` section of the configuration. Its defaults equal the `mutation:` block of
//! `config/default.yaml` (a test keeps them equal), so a config file that leaves the section out
//! behaves exactly like the embedded default.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{SeccompProfile, Toleration};
use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyIngressRule};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};

use super::labels::is_label_value;
use super::network::default_network_profiles;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutationConfig {
    /// Off: every pod passes unchanged (validation still judges it).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Runtime profile used when neither the pod nor its namespace names one.
    #[serde(default = "default_runtime")]
    pub default_runtime: String,
    #[serde(default = "default_runtimes")]
    pub runtimes: BTreeMap<String, RuntimeProfile>,
    /// What to do when a profile's RuntimeClass does not exist in the cluster.
    #[serde(default)]
    pub on_missing_runtime_class: OnFailure,
    #[serde(default)]
    pub hardening: HardeningConfig,
    /// Network profile used when neither the pod nor its namespace names one.
    #[serde(default = "default_network")]
    pub default_network_profile: String,
    #[serde(default = "default_network_profiles")]
    pub network_profiles: BTreeMap<String, NetworkProfile>,
    /// With cluster access, apply each profile's NetworkPolicy in a pod's namespace before admitting it.
    #[serde(default = "yes")]
    pub manage_network_policies: bool,
    /// What to do when that apply fails.
    #[serde(default)]
    pub on_network_policy_failure: OnFailure,
    /// Written to the `idle-timeout` annotation for the controller's idle tracking (Go duration).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
}

impl Default for MutationConfig {
    fn default() -> Self {
        MutationConfig {
            enabled: true,
            default_runtime: default_runtime(),
            runtimes: default_runtimes(),
            on_missing_runtime_class: OnFailure::Deny,
            hardening: HardeningConfig::default(),
            default_network_profile: default_network(),
            network_profiles: default_network_profiles(),
            manage_network_policies: true,
            on_network_policy_failure: OnFailure::Deny,
            idle_timeout: default_idle_timeout(),
        }
    }
}

/// A runtime profile: which RuntimeClass a pod runs under, and the scheduling and overhead to copy
/// into the pod when the class cannot be read from the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeProfile {
    pub runtime_class_name: String,
    /// The CRI handler the class should use; only quoted in messages telling an admin how to create it.
    #[serde(default)]
    pub handler: Option<String>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub overhead: BTreeMap<String, Quantity>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Refuse the pod with a message saying what is wrong and how to fix it.
    #[default]
    Deny,
    /// Admit with a warning, skipping the step that failed.
    Warn,
}

/// Hardening steps; each only fills in what the pod leaves unset, never loosens what it asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HardeningConfig {
    /// Set the pod's `securityContext.seccompProfile` when absent.
    #[serde(default = "yes")]
    pub seccomp: bool,
    /// The profile to set: `RuntimeDefault`, or `Localhost` with `localhostProfile`.
    #[serde(default = "runtime_default")]
    pub seccomp_profile: SeccompProfile,
    /// Set `allowPrivilegeEscalation: false` on containers that leave it unset.
    #[serde(default = "yes")]
    pub disallow_privilege_escalation: bool,
    /// Make every container's `capabilities.drop` contain `ALL`.
    #[serde(default = "yes")]
    pub drop_all_capabilities: bool,
    /// Set `automountServiceAccountToken: false` when absent.
    #[serde(default = "yes")]
    pub disable_service_account_token: bool,
}

impl Default for HardeningConfig {
    fn default() -> Self {
        HardeningConfig {
            seccomp: true,
            seccomp_profile: runtime_default(),
            disallow_privilege_escalation: true,
            drop_all_capabilities: true,
            disable_service_account_token: true,
        }
    }
}

/// A network profile: the ingress and egress a pod labelled with it gets, as a NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkProfile {
    /// The NetworkPolicy's name; default `sandbox-admission-<profile>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    /// Allowed ingress; empty denies all ingress.
    #[serde(default)]
    pub ingress: Vec<NetworkPolicyIngressRule>,
    /// Allowed egress; empty denies all egress.
    #[serde(default)]
    pub egress: Vec<NetworkPolicyEgressRule>,
}

impl NetworkProfile {
    pub fn policy_name(&self, profile: &str) -> String {
        self.policy_name
            .clone()
            .unwrap_or_else(|| format!("sandbox-admission-{profile}"))
    }
}

impl MutationConfig {
    /// Checks serde cannot express: every name used as a label value or object name is valid,
    /// the defaults exist, and a Localhost seccomp profile names its file.
    pub fn validate(&self) -> Result<(), String> {
        if self.runtimes.is_empty() {
            return Err("mutation.runtimes must define at least one runtime profile".into());
        }
        if !self.runtimes.contains_key(&self.default_runtime) {
            return Err(format!(
                "mutation.defaultRuntime {:?} is not one of mutation.runtimes ({})",
                self.default_runtime,
                names(self.runtimes.keys())
            ));
        }
        for (name, profile) in &self.runtimes {
            if !is_label_value(name) {
                return Err(format!(
                    "mutation.runtimes: profile name {name:?} is not a valid label value"
                ));
            }
            if !is_dns_subdomain(&profile.runtime_class_name) {
                return Err(format!(
                    "mutation.runtimes.{name}.runtimeClassName {:?} is not a valid object name",
                    profile.runtime_class_name
                ));
            }
        }
        if !self
            .network_profiles
            .contains_key(&self.default_network_profile)
        {
            return Err(format!(
                "mutation.defaultNetworkProfile {:?} is not one of mutation.networkProfiles ({})",
                self.default_network_profile,
                names(self.network_profiles.keys())
            ));
        }
        for (name, profile) in &self.network_profiles {
            if !is_label_value(name) {
                return Err(format!(
                    "mutation.networkProfiles: profile name {name:?} is not a valid label value"
                ));
            }
            let policy = profile.policy_name(name);
            if !is_dns_subdomain(&policy) {
                return Err(format!(
                    "mutation.networkProfiles.{name}: NetworkPolicy name {policy:?} is not a valid object name"
                ));
            }
        }
        let seccomp = &self.hardening.seccomp_profile;
        match (seccomp.type_.as_str(), seccomp.localhost_profile.as_deref()) {
            ("RuntimeDefault", None) => {}
            ("Localhost", Some(path)) if !path.is_empty() => {}
            ("Localhost", _) => {
                return Err(
                    "mutation.hardening.seccompProfile: type Localhost needs localhostProfile"
                        .into(),
                );
            }
            ("RuntimeDefault", Some(_)) => {
                return Err("mutation.hardening.seccompProfile: localhostProfile is only valid with type Localhost".into());
            }
            (other, _) => {
                return Err(format!(
                    "mutation.hardening.seccompProfile.type {other:?} must be RuntimeDefault or Localhost (Unconfined would weaken pods)"
                ));
            }
        }
        if !is_go_duration(&self.idle_timeout) {
            return Err(format!(
                "mutation.idleTimeout {:?} is not a duration such as 30m or 1h30m",
                self.idle_timeout
            ));
        }
        Ok(())
    }
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    keys.map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// RFC 1123 subdomain, as Kubernetes requires of most object names.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A Go `time.ParseDuration` string made of whole units (`90s`, `30m`, `1h30m`).
fn is_go_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

fn yes() -> bool {
    true
}
fn default_runtime() -> String {
    "gvisor".into()
}
fn default_network() -> String {
    "default".into()
}
fn default_idle_timeout() -> String {
    "1h".into()
}
fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

fn default_runtimes() -> BTreeMap<String, RuntimeProfile> {
    let profile = |class: &str, handler: &str| RuntimeProfile {
        runtime_class_name: class.into(),
        handler: Some(handler.into()),
        node_selector: BTreeMap::new(),
        tolerations: Vec::new(),
        overhead: BTreeMap::new(),
    };
    BTreeMap::from([
        ("gvisor".to_owned(), profile("gvisor", "runsc")),
        ("kata".to_owned(), profile("kata-qemu", "kata-qemu")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for ok in ["1h", "30m", "1h30m", "90s", "500ms"] {
            assert!(is_go_duration(ok), "{ok}");
        }
        for bad in ["", "h", "1", "1d", "-1h", "1h x"] {
            assert!(!is_go_duration(bad), "{bad}");
        }
    }

    #[test]
    fn default_validates() {
        MutationConfig::default().validate().unwrap();
    }

    #[test]
    fn refuses_bad_settings() {
        let mut c = MutationConfig {
            default_runtime: "nope".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("defaultRuntime"));
        c.default_runtime = "gvisor".into();
        c.hardening.seccomp_profile.type_ = "Unconfined".into();
        assert!(c.validate().unwrap_err().contains("Unconfined"));
        c.hardening.seccomp_profile.type_ = "Localhost".into();
        assert!(c.validate().unwrap_err().contains("localhostProfile"));
        c.hardening.seccomp_profile.localhost_profile = Some("profiles/sandbox.json".into());
        c.validate().unwrap();
        c.runtimes
            .insert("Bad Name".into(), c.runtimes["gvisor"].clone());
        assert!(c.validate().unwrap_err().contains("Bad Name"));
    }

    #[test]
    fn embedded_yaml_matches_the_defaults() {
        let config = crate::config::Config::embedded().unwrap();
        assert_eq!(config.mutation, MutationConfig::default());
        let empty = crate::config::Config::parse("listen: 0.0.0.0:8443\n", "t").unwrap();
        assert_eq!(empty.mutation, MutationConfig::default());
    }

    #[test]
    fn subdomains() {
        assert!(is_dns_subdomain("kata-qemu"));
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("Kata"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain("a..b"));
    }
}
