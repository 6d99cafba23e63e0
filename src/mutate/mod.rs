//! Pod mutation (`/mutate`): puts Sandbox pods into their isolation runtime, hardens them,
//! labels them for their network profile and for the controller's bookkeeping.
//!
//! The pod is read from the JSON the API server sent, keeping only the parts mutation reads or
//! writes (its *outline*, [`read`]); the steps edit the outline and the answer is the difference
//! of the outline before and after, which is the patch of the whole pod: fields this crate does
//! not model are never built, never copied and survive untouched. The in-memory mutation that
//! validation judges (`effective_pod`) runs the same steps on the same outline and applies that
//! patch to the whole pod. Every step only adds what is missing, so running the mutation on its
//! own output yields an empty patch (safe with `reinvocationPolicy: IfNeeded`).

mod bookkeeping;
mod config;
mod hardening;
pub mod labels;
pub mod network;
mod patch;
mod read;
mod runtime;
pub mod sandbox_pod;
mod seal;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::admission::{AdmissionRequest, Operation};
use crate::cluster::{ClusterAccess, Ensured, Lookup};

pub use bookkeeping::{
    ANNOTATIONS as BOOKKEEPING_ANNOTATIONS, INPUT_ANNOTATIONS, LABELS as BOOKKEEPING_LABELS,
};
pub use config::{HardeningConfig, MutationConfig, NetworkProfile, OnFailure, RuntimeProfile};
pub use patch::Refusal;
use patch::Touched;
pub use seal::Seal;

use bookkeeping::{Bookkeeping, PodRef};
use runtime::{Placement, Source};
use sandbox_pod::PodHead;

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

/// The pod validation judges for a Sandbox or SandboxTemplate.
#[derive(Debug, Clone)]
pub struct EffectivePod {
    /// The whole Pod, as the controller would create it and this mutation would leave it.
    pub pod: Value,
    /// JSON pointers (into `pod`) of what the mutation added or changed: everything else is as
    /// the author wrote it.
    pub defaulted: Vec<String>,
    pub mutations: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TemplateOwner {
    Sandbox,
    Template,
}

pub struct Mutator {
    config: MutationConfig,
    prefix: String,
    cluster: Option<Arc<dyn ClusterAccess>>,
    /// Seals the admission time; `serve` keys it from the serving key ([`Mutator::seal`]).
    seal: Arc<Seal>,
    /// `<prefix>runtime` and `<prefix>network-profile`: the profile choices, read per review.
    runtime_key: String,
    network_key: String,
}

impl Mutator {
    /// `cluster` is `None` offline (`review`, no kubeconfig): RuntimeClass scheduling and overhead
    /// then come from the configured profiles and no NetworkPolicy is applied.
    pub fn new(
        config: &MutationConfig,
        label_prefix: &str,
        cluster: Option<Arc<dyn ClusterAccess>>,
    ) -> Self {
        if config.enabled && cluster.is_none() {
            tracing::info!(
                "mutation without cluster access: RuntimeClass scheduling and overhead come from the configured runtime profiles, and NetworkPolicies are not applied (render them with `network-policies`)"
            );
        }
        Mutator {
            config: config.clone(),
            prefix: label_prefix.to_owned(),
            cluster,
            seal: Arc::new(Seal::random()),
            runtime_key: format!("{label_prefix}runtime"),
            network_key: network::profile_label_key(label_prefix),
        }
    }

    /// The seal on `admitted-at`. A random key until `serve` rotates it to one derived from the
    /// serving key that all replicas share, so that any replica verifies another's seal.
    pub fn seal(&self) -> &Arc<Seal> {
        &self.seal
    }

    pub async fn mutate(&self, req: &AdmissionRequest) -> MutationOutcome {
        let is_pod_create = req.kind.group.is_empty()
            && req.kind.kind == "Pod"
            && req.operation == Operation::Create
            && req.sub_resource.is_none();
        if !self.config.enabled || !is_pod_create {
            return MutationOutcome::default();
        }
        match self.mutate_pod(req, Utc::now()).await {
            Ok(outcome) => outcome,
            Err(Refusal(message)) => MutationOutcome {
                denial: Some(format!("[mutation] {message}")),
                ..Default::default()
            },
        }
    }

    async fn mutate_pod(
        &self,
        req: &AdmissionRequest,
        now: DateTime<Utc>,
    ) -> Result<MutationOutcome, Refusal> {
        let object = req
            .object_json()
            .ok_or_else(|| Refusal::new("CREATE Pod request carries no object"))?;
        let outline =
            read::read(object).map_err(|e| Refusal::new(format!("the pod cannot be read: {e}")))?;
        let pod = PodHead::deserialize(&outline)
            .map_err(|e| Refusal::new(format!("the pod cannot be read as a v1 Pod: {e}")))?;
        let namespace = if req.namespace.is_empty() {
            pod.metadata.namespace.clone().unwrap_or_default()
        } else {
            req.namespace.clone()
        };
        // Read at most once: for enforce mode (pods without Sandbox marks) and for profiles.
        let mut known_ns_labels = None;
        let identity = match sandbox_pod::identify(&pod.metadata) {
            Some(identity) => identity,
            None => {
                // Not a Sandbox pod by its own marks; in an enforce namespace it is one anyway.
                // Decided here from the namespace cache, whatever webhook entry sent it.
                let labels = self.namespace_labels(&namespace).await?;
                if !sandbox_pod::enforced(&labels, &self.prefix) {
                    return Ok(MutationOutcome::default());
                }
                known_ns_labels = Some(labels);
                sandbox_pod::enforced_identity(&pod.metadata)
            }
        };
        let enforced = known_ns_labels.is_some();
        let original = patch::Original::whole(&outline);
        let (mutated, touched, mut out, network) = self
            .apply(
                original,
                outline.clone(),
                &pod,
                &identity,
                &namespace,
                known_ns_labels,
                now,
            )
            .await?;
        if enforced {
            out.audit_annotations
                .insert("isolation".into(), sandbox_pod::ENFORCE.into());
        }
        // Last, so that a pod refused for any other reason causes no side effect.
        if let Some((name, profile)) = self.config.network_profiles.get_key_value(&network) {
            self.ensure_network_policy(req, &namespace, name, profile, &mut out)
                .await?;
        }
        out.patch = patch::diff_touched(original, &mutated, &touched);
        Ok(out)
    }

    /// The pod the controller would create from a Sandbox or SandboxTemplate, as this mutation
    /// leaves it: what validation judges (`validation.judge: effective`), so a Sandbox is not
    /// refused for what the webhook fills in a moment later. `None` for other kinds and for
    /// objects without `spec.podTemplate.spec` (the policies then judge what was written and
    /// fail closed on the missing spec). Nothing is applied in the cluster.
    pub async fn effective_pod(
        &self,
        req: &AdmissionRequest,
    ) -> Option<Result<EffectivePod, Refusal>> {
        let template_kind = match (req.kind.group.as_str(), req.kind.kind.as_str()) {
            (sandbox_pod::SANDBOX_GROUP, "Sandbox") => TemplateOwner::Sandbox,
            (sandbox_pod::EXTENSIONS_GROUP, "SandboxTemplate") => TemplateOwner::Template,
            _ => return None,
        };
        let object = req.object()?;
        let template = object.pointer("/spec/podTemplate")?;
        template.get("spec").filter(|s| !s.is_null())?;
        Some(
            self.effective_pod_of(req, object, template, template_kind)
                .await,
        )
    }

    async fn effective_pod_of(
        &self,
        req: &AdmissionRequest,
        object: &Value,
        template: &Value,
        owner: TemplateOwner,
    ) -> Result<EffectivePod, Refusal> {
        use k8s_openapi::api::core::v1::PodSpec;
        let spec = template.get("spec").unwrap_or(&Value::Null);
        // Never build on what does not decode: the API server would refuse such a pod, and
        // mutation must not guess at a shape it cannot read.
        // Only a spec that fails is decoded again with its path tracked, to name the field at
        // fault (`containers[0].ports`), which serde alone does not: tracking costs as much as
        // the decode itself, on every Sandbox review.
        if PodSpec::deserialize(spec).is_err()
            && let Err(e) = serde_path_to_error::deserialize::<_, PodSpec>(spec)
        {
            let at = e.path().to_string();
            return Err(Refusal::new(format!(
                "spec.podTemplate.spec is not a valid pod spec: {at}: {}",
                e.into_inner()
            )));
        }
        let from_template = owner == TemplateOwner::Template;
        let pod_head = sandbox_pod::controller_pod_head(req, object, template, from_template)?;
        // The steps mutate the one copy made of the template's spec; the patch is taken
        // against the template's own.
        let pod = sandbox_pod::with_spec(&pod_head, spec);
        let original = patch::Original {
            root: &pod_head,
            spec: Some(spec),
        };
        let head = PodHead::deserialize(&pod)
            .map_err(|e| Refusal::new(format!("spec.podTemplate.metadata cannot be read: {e}")))?;
        let identity = sandbox_pod::identify(&head.metadata)
            .ok_or_else(|| Refusal::new("the controller's pod would not be a Sandbox pod"))?;
        let namespace = req.namespace.clone();
        // The steps run on the whole pod (they touch only what `/mutate`'s outline keeps), so
        // their copy is the pod as `/mutate` would leave it, and `ops` is the patch it would
        // answer: no outline to read and no patch to apply again.
        let (pod, touched, out, _) = self
            .apply(
                original,
                pod,
                &head,
                &identity,
                &namespace,
                None,
                Utc::now(),
            )
            .await?;
        let defaulted = patch::touched_pointers(original, &pod, &touched);
        Ok(EffectivePod {
            pod,
            defaulted,
            mutations: out.mutations,
            warnings: out.warnings,
        })
    }

    /// Every in-memory step of the mutation on `mutated`, a copy of `original` (a Sandbox pod's
    /// outline, or the whole pod: the steps read and write only what the outline keeps), in
    /// order: runtime, hardening, bookkeeping. Returns the mutated copy, the places each step
    /// set (the patch from `original` is taken there: [`patch::diff_touched`]), what was done,
    /// and the network profile whose NetworkPolicy the caller may apply.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        original: patch::Original<'_>,
        mut mutated: Value,
        pod: &PodHead,
        identity: &sandbox_pod::SandboxIdentity,
        namespace: &str,
        known_ns_labels: Option<BTreeMap<String, String>>,
        now: DateTime<Utc>,
    ) -> Result<(Value, patch::Touched, MutationOutcome, String), Refusal> {
        let (runtime_key, network_key) = (self.runtime_key.as_str(), self.network_key.as_str());
        let annotation = |key: &str| {
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .map(String::as_str)
        };
        let (runtime_annotation, network_annotation) =
            (annotation(runtime_key), annotation(network_key));
        let ns_labels = match known_ns_labels {
            Some(labels) => labels,
            None if runtime_annotation.is_none() || network_annotation.is_none() => {
                self.namespace_labels(namespace).await?
            }
            None => BTreeMap::new(),
        };
        let ns_label = |key: &str| ns_labels.get(key).map(String::as_str);

        let mut out = MutationOutcome::default();
        let mut touched = Touched::default();

        let (runtime_name, profile, source) = runtime::choose(
            "runtime",
            runtime_key,
            runtime_annotation,
            ns_label(runtime_key),
            &self.config.default_runtime,
            &self.config.runtimes,
        )?;
        let runtime_label = self
            .set_runtime(
                pod,
                &mut mutated,
                (runtime_name, profile, source),
                &mut out,
                &mut touched,
            )
            .await?;

        hardening::harden(
            patch::spec(&mut mutated)?,
            &self.config.hardening,
            &mut out.mutations,
            &mut out.warnings,
            &mut touched,
        )?;

        let (network_name, _, _) = runtime::choose(
            "network",
            network_key,
            network_annotation,
            ns_label(network_key),
            &self.config.default_network_profile,
            &self.config.network_profiles,
        )?;
        bookkeeping::record(
            &mut mutated,
            &Bookkeeping {
                prefix: &self.prefix,
                identity,
                runtime_profile: runtime_label,
                network_profile: network_name,
                idle_timeout: &self.config.idle_timeout,
                now,
                seal: &self.seal,
                pod: PodRef {
                    namespace,
                    name: pod.metadata.name.as_deref().unwrap_or_default(),
                    generate_name: pod.metadata.generate_name.as_deref().unwrap_or_default(),
                },
            },
            &mut out.mutations,
        )?;
        touched.mark(&["metadata", "labels"]);
        touched.mark(&["metadata", "annotations"]);
        patch::prune_created_empty(original, &mut mutated);

        out.audit_annotations
            .insert("runtime".into(), runtime_label.unwrap_or("none").into());
        out.audit_annotations
            .insert("network-profile".into(), network_name.into());
        Ok((mutated, touched, out, network_name.to_owned()))
    }

    /// The RuntimeClasses of the configured profiles, class name → (profile, handler): every
    /// one is a runtime this installation chose, so validation accepts it.
    pub fn profile_classes(&self) -> Vec<(&str, &str, Option<&str>)> {
        self.config
            .runtimes
            .iter()
            .map(|(name, p)| {
                (
                    p.runtime_class_name.as_str(),
                    name.as_str(),
                    p.handler.as_deref(),
                )
            })
            .collect()
    }

    /// The cluster's RuntimeClass `name`, when there is cluster access and it exists.
    pub async fn runtime_class(
        &self,
        name: &str,
    ) -> Option<k8s_openapi::api::node::v1::RuntimeClass> {
        match self.cluster.as_ref()?.runtime_class(name).await {
            Lookup::Found(rc) => Some(rc.as_ref().clone()),
            _ => None,
        }
    }

    /// Labels of the pod's namespace; empty without cluster access or when it does not exist.
    async fn namespace_labels(&self, namespace: &str) -> Result<BTreeMap<String, String>, Refusal> {
        let Some(cluster) = &self.cluster else {
            return Ok(BTreeMap::new());
        };
        if namespace.is_empty() {
            return Ok(BTreeMap::new());
        }
        match cluster.namespace(namespace).await {
            Lookup::Found(ns) => Ok(ns.metadata.labels.clone().unwrap_or_default()),
            Lookup::Missing => Ok(BTreeMap::new()),
            Lookup::Unavailable(reason) => Err(Refusal::new(format!(
                "cannot read namespace {namespace:?}, whose labels decide enforce mode and the runtime and network profiles: {reason}; retry shortly"
            ))),
        }
    }

    /// Put the pod under the chosen profile's RuntimeClass. Returns the profile the pod now runs
    /// under, if any (for its label).
    async fn set_runtime<'a>(
        &'a self,
        pod: &PodHead,
        mutated: &mut Value,
        (name, profile, source): (&'a str, &'a RuntimeProfile, Source),
        out: &mut MutationOutcome,
        touched: &mut Touched,
    ) -> Result<Option<&'a str>, Refusal> {
        let class = profile.runtime_class_name.as_str();
        let existing = pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.as_deref())
            .filter(|c| !c.is_empty());
        if let Some(existing) = existing {
            // Never replaced: validation decides whether the pod's own class is allowed.
            out.audit_annotations
                .insert("runtime-class".into(), existing.into());
            if existing == class {
                return Ok(Some(name));
            }
            if source != Source::Default {
                out.warnings.push(format!(
                    "kept runtimeClassName {existing}; {source} asked for runtime {name} ({class})"
                ));
            }
            return Ok(self
                .config
                .runtimes
                .iter()
                .find(|(_, p)| p.runtime_class_name == existing)
                .map(|(n, _)| n.as_str()));
        }

        let placement = match &self.cluster {
            None => Placement::from_profile(profile),
            Some(cluster) => match cluster.runtime_class(class).await {
                Lookup::Found(rc) => Placement::from_class(&rc),
                Lookup::Missing => {
                    let handler = profile
                        .handler
                        .as_deref()
                        .map(|h| format!(" with handler {h}"))
                        .unwrap_or_default();
                    match self.config.on_missing_runtime_class {
                        OnFailure::Deny => {
                            return Err(Refusal::new(format!(
                                "runtime profile {name} needs RuntimeClass {class:?}, which does not exist in this cluster, so the pod could never start. Create RuntimeClass {class}{handler} on nodes that have the runtime, choose another profile with the pod annotation {}runtime, or set mutation.onMissingRuntimeClass: warn",
                                self.prefix
                            )));
                        }
                        OnFailure::Warn => {
                            out.warnings.push(format!(
                                "RuntimeClass {class} (runtime {name}) does not exist: runtime not set"
                            ));
                            return Ok(None);
                        }
                    }
                }
                Lookup::Unavailable(reason) => {
                    return Err(Refusal::new(format!(
                        "cannot check RuntimeClass {class:?} for runtime profile {name}: {reason}; retry shortly"
                    )));
                }
            },
        };
        let spec = patch::spec(mutated)?;
        for field in [
            "runtimeClassName",
            "nodeSelector",
            "overhead",
            "tolerations",
        ] {
            touched.mark(&["spec", field]);
        }
        spec.insert("runtimeClassName".into(), Value::String(class.to_owned()));
        out.mutations.push(format!("runtimeClassName={class}"));
        runtime::apply_placement(spec, &placement, class, &mut out.mutations)?;
        out.audit_annotations
            .insert("runtime-class".into(), class.into());
        Ok(Some(name))
    }

    async fn ensure_network_policy(
        &self,
        req: &AdmissionRequest,
        namespace: &str,
        name: &str,
        profile: &NetworkProfile,
        out: &mut MutationOutcome,
    ) -> Result<(), Refusal> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        if !self.config.manage_network_policies || req.dry_run {
            return Ok(());
        }
        if namespace.is_empty() {
            return Err(Refusal::new(
                "the pod names no namespace, so its NetworkPolicy cannot be placed",
            ));
        }
        let policy = network::network_policy(&self.prefix, name, profile, namespace);
        let policy_name = profile.policy_name(name);
        match cluster.ensure_network_policy(&policy).await {
            Ok(Ensured::Applied) => {
                out.mutations
                    .push(format!("applied NetworkPolicy {namespace}/{policy_name}"));
                Ok(())
            }
            Ok(Ensured::Cached) => Ok(()),
            Err(err) => match self.config.on_network_policy_failure {
                OnFailure::Deny => Err(Refusal::new(format!(
                    "could not apply NetworkPolicy {namespace}/{policy_name} for network profile {name}: {err}. The webhook's ServiceAccount needs get, create and patch on networkpolicies.networking.k8s.io; or set mutation.onNetworkPolicyFailure: warn"
                ))),
                OnFailure::Warn => {
                    out.warnings
                        .push(format!("NetworkPolicy {policy_name} not applied: {err}"));
                    Ok(())
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
