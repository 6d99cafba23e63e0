//! `network-policies`: the NetworkPolicies the server would apply, as YAML, for GitOps users and
//! for clusters where the webhook is not allowed to write them.

use std::path::PathBuf;
use std::process::ExitCode;

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::config::Config;

use crate::mutate::network::network_policy;

#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Print the NetworkPolicies of every network profile for a namespace, as YAML",
    after_help = "Example:\n  sandbox-admission network-policies --namespace team-a | kubectl apply -f -"
)]
pub struct NetworkPoliciesArgs {
    /// Namespace the policies are rendered for.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Configuration file (default: the embedded configuration).
    #[arg(long, env = "SANDBOX_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Every configured network profile's NetworkPolicy for `namespace`, as multi-document YAML.
pub fn render_network_policies(config: &Config, namespace: &str) -> Result<String, String> {
    let policies: Vec<NetworkPolicy> = config
        .mutation
        .network_profiles
        .iter()
        .map(|(name, profile)| network_policy(&config.label_prefix, name, profile, namespace))
        .collect();
    serde_saphyr::to_string_multiple(&policies)
        .map_err(|e| format!("cannot render NetworkPolicies as YAML: {e}"))
}

pub fn run(args: &NetworkPoliciesArgs) -> ExitCode {
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Config::embedded(),
    };
    let rendered = config
        .map_err(|e| e.to_string())
        .and_then(|c| render_network_policies(&c, &args.namespace));
    match rendered {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_document_per_profile_that_reads_back() {
        let config = Config::embedded().unwrap();
        let yaml = render_network_policies(&config, "team-a").unwrap();
        let docs: Vec<NetworkPolicy> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(docs.len(), config.mutation.network_profiles.len());
        for (doc, name) in docs.iter().zip(config.mutation.network_profiles.keys()) {
            assert_eq!(doc.metadata.namespace.as_deref(), Some("team-a"));
            assert_eq!(
                doc.metadata.name.as_deref(),
                Some(format!("sandbox-admission-{name}").as_str())
            );
        }
        assert!(yaml.contains("kind: NetworkPolicy"), "{yaml}");
        assert!(yaml.contains("169.254.0.0/16"), "{yaml}");
    }

    #[test]
    fn custom_profiles_and_bad_configs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "labelPrefix: corp.example/\nmutation:\n  defaultNetworkProfile: closed\n  networkProfiles:\n    closed:\n      policyName: deny-all\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        let yaml = render_network_policies(&config, "ns1").unwrap();
        let docs: Vec<NetworkPolicy> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].metadata.name.as_deref(), Some("deny-all"));
        let spec = docs[0].spec.clone().unwrap();
        assert_eq!(spec.ingress, Some(Vec::new()), "empty ingress denies all");
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()["corp.example/network-profile"],
            "closed"
        );
        let args = |config: Option<PathBuf>| NetworkPoliciesArgs {
            namespace: "ns1".into(),
            config,
        };
        assert_eq!(run(&args(Some(path))), ExitCode::SUCCESS);
        assert_eq!(
            run(&args(Some(dir.path().join("missing.yaml")))),
            ExitCode::FAILURE
        );
    }
}
