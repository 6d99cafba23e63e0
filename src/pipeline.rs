//! The admission pipeline, one way through: decode → mutate/validate → decide → encode → record.
//! The server and the offline `review` command both go through here, so they cannot disagree.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;

use crate::admission::{self, AdmissionRequest, DecodeError, Response};
use crate::audit::events::Events;
use crate::audit::{DecisionLog, DecisionRecord};
use crate::cluster::{ClusterAccess, namespace_object};
use crate::config::Config;
use crate::config::Judge;
pub use crate::decision::{Decision, Endpoint};
use crate::disagreement::{self, Flip, SHADOW_ENDPOINT, ShadowDetail};
use crate::metrics::{EndpointLabels, Metrics, RequestLabels, ViolationLabels};
use crate::mutate::{MutationOutcome, Mutator, Refusal};
use crate::policy::{Action, EvalContext, PolicyHit, PolicySource, PolicyStore, ReferenceCase};
use crate::shadow::Shadow;

/// The name a denial carries when a Sandbox's or template's pod cannot be built or mutated.
pub const EFFECTIVE_POD_POLICY: &str = "sandbox-effective-pod";

/// The name of the warning a SandboxWarmPool gets when its template (in `data.inventory`)
/// would be refused as it stands: the pool would keep warm Sandboxes whose pods are refused.
pub const WARM_POOL_TEMPLATE_POLICY: &str = "warmpool-template-admitted";

/// How a body was answered on the wire.
pub enum Answer {
    /// An AdmissionReview (allowed or denied), HTTP 200.
    Review(Vec<u8>),
    /// The body was not an AdmissionReview we can answer: HTTP 400 with this message.
    BadRequest(String),
}

pub struct Admitter {
    pub config: Arc<Config>,
    pub mutator: Mutator,
    pub policies: Arc<PolicyStore>,
    pub metrics: Arc<Metrics>,
    pub log: DecisionLog,
    /// Kubernetes Events for denials and warnings (a no-op handle when off).
    pub events: Events,
    /// Cluster access, when there is some: the Namespace for `input.review.namespaceObject`.
    pub cluster: Option<Arc<dyn ClusterAccess>>,
    /// `input.sandbox_admission.runtime_classes`: the configured profiles' RuntimeClasses.
    profile_classes: Value,
    /// The candidate set judged after each `/validate` answer (`serve --shadow-policies`).
    pub shadow: Option<Arc<Shadow>>,
    /// The last decisions, for the admin page (only when it is on).
    pub recent: Option<Arc<crate::audit::recent::Recent>>,
}

/// A shadow evaluation waiting for its answer to be sent (see [`Admitter::handle_then`]).
pub struct ShadowJob {
    req: AdmissionRequest,
    live: Decision,
    _slot: crate::shadow::Slot,
}

impl Admitter {
    /// Assemble the pipeline from configuration. `serve` and the offline `review` both build it
    /// here, so a review on a laptop runs exactly the mutation and policies the server runs.
    pub fn build(
        config: Arc<Config>,
        policies_dir: Option<&Path>,
        cluster: Option<Arc<dyn ClusterAccess>>,
        metrics: Arc<Metrics>,
        log: DecisionLog,
        events: Events,
    ) -> anyhow::Result<Admitter> {
        let source = match policies_dir {
            None => PolicySource::Embedded,
            Some(dir) => PolicySource::Dir(dir.to_path_buf()),
        };
        let policies = PolicyStore::load(&source, &config.policy, metrics.clone())
            .map_err(|e| anyhow::anyhow!("policy set {} does not load:\n{e}", source.describe()))?;
        let shadow = Shadow::load(&config.shadow, &config.policy, metrics.clone())?.map(Arc::new);
        let mutator = Mutator::new(&config.mutation, &config.label_prefix, cluster.clone());
        let profile_classes = Value::Object(
            mutator
                .profile_classes()
                .into_iter()
                .map(|(class, profile, handler)| {
                    (
                        class.to_owned(),
                        serde_json::json!({"profile": profile, "handler": handler}),
                    )
                })
                .collect(),
        );
        let recent = config
            .admin
            .listen
            .map(|_| Arc::new(crate::audit::recent::Recent::new(config.admin.recent)));
        Ok(Admitter {
            recent,
            shadow,
            mutator,
            profile_classes,
            cluster,
            config,
            policies,
            metrics,
            log,
            events,
        })
    }

    /// Mutate or validate one decoded request and decide. No I/O beyond what mutation needs.
    pub async fn decide(&self, endpoint: Endpoint, req: &AdmissionRequest) -> Decision {
        self.decide_with(endpoint, req, &self.policies).await
    }

    /// [`Admitter::decide`] with another policy set judging `/validate`: a candidate set (`replay`,
    /// the shadow set) goes through exactly the steps the serving set does.
    pub async fn decide_with(
        &self,
        endpoint: Endpoint,
        req: &AdmissionRequest,
        policies: &PolicyStore,
    ) -> Decision {
        match endpoint {
            Endpoint::Mutate => decide_mutation(req, self.mutator.mutate(req).await),
            Endpoint::Validate => {
                // Gatekeeper gives policies the request's Namespace; so do we, when we can see it.
                let namespace = match (&self.cluster, req.namespace.is_empty()) {
                    (Some(cluster), false) => {
                        namespace_object(cluster.as_ref(), &req.namespace).await
                    }
                    _ => None,
                };
                let (context, refusal) = self.validation_context(req).await;
                let mut hits: Vec<PolicyHit> = refusal.into_iter().collect();
                hits.extend(policies.evaluate_with(
                    req,
                    &EvalContext {
                        namespace: namespace.as_ref(),
                        sandbox_admission: Some(&context),
                    },
                ));
                hits.extend(self.warm_pool_template_refusal(req).await);
                decide_validation(req, hits)
            }
        }
    }

    /// Explain a `/validate` decision: the decision itself, and for each policy that fired (or
    /// only `policy`, fired or not) the engine's account of it, on exactly the input the
    /// server builds.
    pub async fn explain(
        &self,
        req: &AdmissionRequest,
        policy: Option<&str>,
    ) -> (
        Decision,
        Vec<Result<crate::policy::PolicyExplanation, String>>,
    ) {
        let namespace = match (&self.cluster, req.namespace.is_empty()) {
            (Some(cluster), false) => namespace_object(cluster.as_ref(), &req.namespace).await,
            _ => None,
        };
        let (context, refusal) = self.validation_context(req).await;
        let ctx = EvalContext {
            namespace: namespace.as_ref(),
            sandbox_admission: Some(&context),
        };
        let set = self.policies.current();
        let mut hits: Vec<PolicyHit> = refusal.into_iter().collect();
        hits.extend(set.evaluate_with(req, &ctx));
        hits.extend(self.warm_pool_template_refusal(req).await);
        let decision = decide_validation(req, hits);
        let mut names: Vec<String> = Vec::new();
        match policy {
            Some(p) => names.push(p.to_owned()),
            None => {
                for h in &decision.hits {
                    if h.policy != EFFECTIVE_POD_POLICY && !names.contains(&h.policy) {
                        names.push(h.policy.clone());
                    }
                }
            }
        }
        let explained = names
            .iter()
            .map(|n| set.explain_policy(req, &ctx, n))
            .collect();
        (decision, explained)
    }

    /// A SandboxWarmPool's template, from `data.inventory`, judged as `/validate` would judge
    /// an UPDATE of it now (its effective pod included). Refused, it is a warning on the pool:
    /// the pool's Sandboxes would be refused too. `None` when the pool names no template, the
    /// template is not in the inventory (warmpool-template-exists says so) or it is admitted.
    async fn warm_pool_template_refusal(&self, req: &AdmissionRequest) -> Option<PolicyHit> {
        if req.kind.group != "extensions.agents.x-k8s.io"
            || req.kind.kind != "SandboxWarmPool"
            || req.namespace.is_empty()
        {
            return None;
        }
        let pool = req.object()?;
        if pool.pointer("/metadata/deletionTimestamp").is_some() {
            return None;
        }
        let name = pool
            .pointer("/spec/sandboxTemplateRef/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())?;
        let inventory = self.policies.inventory()?;
        let (api_version, template) = inventory
            .get("namespace")?
            .get(&req.namespace)?
            .as_object()?
            .iter()
            .filter(|(gv, _)| gv.starts_with("extensions.agents.x-k8s.io/"))
            .find_map(|(gv, kinds)| Some((gv.clone(), kinds.get("SandboxTemplate")?.get(name)?)))?;
        let version = api_version.rsplit('/').next().unwrap_or_default();
        let gvk = serde_json::json!({"group": "extensions.agents.x-k8s.io", "version": version, "kind": "SandboxTemplate"});
        let template_req = AdmissionRequest::from_value(serde_json::json!({
            "uid": format!("{}-template", req.uid),
            "kind": gvk,
            "resource": {"group": "extensions.agents.x-k8s.io", "version": version, "resource": "sandboxtemplates"},
            "requestKind": gvk,
            "name": name,
            "namespace": req.namespace,
            "operation": "UPDATE",
            "userInfo": req.user_info,
            "object": template,
            "oldObject": template,
            "dryRun": req.dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"},
        }))
        .ok()?;
        // Not a pool, so this never recurses further.
        let decision = Box::pin(self.decide(Endpoint::Validate, &template_req)).await;
        if decision.response.allowed {
            return None;
        }
        let why = decision
            .response
            .status
            .as_ref()
            .map(|s| s.message.lines().collect::<Vec<_>>().join("; "))
            .unwrap_or_default();
        Some(PolicyHit {
            policy: WARM_POOL_TEMPLATE_POLICY.into(),
            action: Action::Warn,
            message: format!(
                "SandboxTemplate {name} would be refused as it stands, so would this pool's Sandboxes: {why}"
            ),
        })
    }

    /// [`Admitter::decide`] within `deadline`; past it the request is refused (fail closed).
    /// The server, `scan` and the background audit all judge through here.
    pub async fn decide_within(
        &self,
        endpoint: Endpoint,
        req: &AdmissionRequest,
        deadline: Duration,
    ) -> Decision {
        match tokio::time::timeout(deadline, self.decide(endpoint, req)).await {
            Ok(d) => d,
            Err(_) => Decision {
                response: Response::deny(
                    &req.uid,
                    500,
                    format!(
                        "review did not finish within its {}ms deadline; refused (fail closed)",
                        deadline.as_millis()
                    ),
                ),
                hits: Vec::new(),
                mutations: Vec::new(),
            },
        }
    }

    /// `/validate`'s verdict on `req` and, for each policy that judges it, the exact `input`
    /// it is given: what another engine needs to judge the request the same way (the OPA
    /// differential test, tests/opa_differential.rs).
    pub async fn reference_cases(
        &self,
        req: &AdmissionRequest,
    ) -> anyhow::Result<(Vec<PolicyHit>, Vec<ReferenceCase>)> {
        let (context, _) = self.validation_context(req).await;
        let ctx = EvalContext {
            namespace: None,
            sandbox_admission: Some(&context),
        };
        let set = self.policies.current();
        Ok((
            set.evaluate_with(req, &ctx),
            set.reference_cases(req, &ctx)?,
        ))
    }

    /// `input.sandbox_admission` for one request (`policies/README.md`): how it is judged, the
    /// effective pod of a Sandbox or template, the runtimes this installation recognises, and
    /// the cluster's RuntimeClass of the judged pod. A template that mutation would refuse is a
    /// denial of its own, since its pod could never be admitted.
    async fn validation_context(&self, req: &AdmissionRequest) -> (Value, Option<PolicyHit>) {
        let judge = self.config.judge();
        let mut ctx = serde_json::Map::new();
        ctx.insert("judge".into(), Value::from(judge.as_str()));
        ctx.insert("runtime_classes".into(), self.profile_classes.clone());
        let mut refusal = None;
        let effective = match judge {
            Judge::Effective => self.mutator.effective_pod(req).await,
            Judge::AsWritten => None,
        };
        let class = match effective {
            Some(Ok(e)) => {
                let class = e
                    .pod
                    .pointer("/spec/runtimeClassName")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                ctx.insert("effective_pod".into(), e.pod);
                ctx.insert("defaulted".into(), Value::from(e.defaulted));
                class
            }
            Some(Err(Refusal(message))) => {
                refusal = Some(PolicyHit {
                    policy: EFFECTIVE_POD_POLICY.into(),
                    action: Action::Deny,
                    message: format!(
                        "the pod this {} would create cannot be admitted: {message}",
                        req.kind.kind
                    ),
                });
                None
            }
            None => {
                let written = match req.kind.kind.as_str() {
                    "Pod" => "/spec/runtimeClassName",
                    _ => "/spec/podTemplate/spec/runtimeClassName",
                };
                req.object()
                    .and_then(|o| o.pointer(written))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }
        };
        if let Some(class) = class.filter(|c| !c.is_empty())
            && let Some(rc) = self.mutator.runtime_class(&class).await
            && let Ok(rc) = serde_json::to_value(rc)
        {
            ctx.insert("runtime_class".into(), rc);
        }
        (Value::Object(ctx), refusal)
    }

    /// The whole pipeline for one HTTP body, within `deadline`.
    pub async fn handle(&self, endpoint: Endpoint, body: &[u8], deadline: Duration) -> Answer {
        self.handle_then(endpoint, body, deadline).await.0
    }

    /// [`Admitter::handle`], plus the shadow set's evaluation of the same request, to be run
    /// with [`Admitter::judge_shadow`] once the answer has been sent (the HTTPS routes do).
    pub async fn handle_then(
        &self,
        endpoint: Endpoint,
        body: &[u8],
        deadline: Duration,
    ) -> (Answer, Option<ShadowJob>) {
        let started = Instant::now();
        let mut job = None;
        self.metrics.in_flight.inc();
        // Validation builds the whole request for the policies anyway; mutation reads only
        // part of the pod, from its text.
        let decoded = match endpoint {
            Endpoint::Validate => admission::decode_built(body),
            Endpoint::Mutate => admission::decode(body),
        };
        let answer = match decoded {
            Err(err) => self.refuse(endpoint, err),
            Ok(req) => {
                let decision = self.decide_within(endpoint, &req, deadline).await;
                let body = decision.response.to_review_json();
                self.record(endpoint, &req, &decision, started.elapsed());
                // A review refused at its deadline was never judged: nothing to compare.
                let judged = decision
                    .response
                    .status
                    .as_ref()
                    .is_none_or(|s| s.code != 500);
                if endpoint == Endpoint::Validate
                    && judged
                    && let Some(slot) = self.shadow.as_ref().and_then(|s| s.try_slot())
                {
                    job = Some(ShadowJob {
                        req,
                        live: decision,
                        _slot: slot,
                    });
                }
                Answer::Review(body)
            }
        };
        self.metrics.in_flight.dec();
        (answer, job)
    }

    /// Judge a request with the shadow set, and record how its verdict differs from the live
    /// answer: each changed policy in `sandbox_admission_shadow_disagreements_total` and one
    /// decision-log record (`endpoint: shadow`) per disagreeing review.
    pub async fn judge_shadow(&self, job: ShadowJob) {
        let Some(shadow) = &self.shadow else { return };
        let started = Instant::now();
        let candidate = self
            .decide_with(Endpoint::Validate, &job.req, &shadow.store)
            .await;
        let changes = disagreement::changes(&job.live.hits, &candidate.hits);
        let flip = Flip::between(job.live.response.allowed, candidate.response.allowed);
        shadow.count(&changes);
        if changes.is_empty() && flip.is_none() {
            return;
        }
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut record = record_of(Endpoint::Validate, &job.req, &candidate, latency_us, false);
        record.endpoint = SHADOW_ENDPOINT.into();
        record.shadow = Some(ShadowDetail {
            live_decision: job.live.label().into(),
            live_allowed: job.live.response.allowed,
            flip,
            changes,
        });
        if let Some(recent) = &self.recent {
            recent.push(record.clone());
        }
        self.log.record(record);
    }

    fn refuse(&self, endpoint: Endpoint, err: DecodeError) -> Answer {
        let reason = match &err {
            DecodeError::NotJson(_) => "not_json",
            DecodeError::NotAReview(_) => "not_a_review",
            DecodeError::WrongApiVersion(_) => "wrong_api_version",
            DecodeError::WrongKind(_) => "wrong_kind",
            DecodeError::MissingRequest => "missing_request",
            DecodeError::MissingUid => "missing_uid",
            DecodeError::BadRequest { .. } => "malformed_request",
        };
        self.metrics.reject(reason);
        tracing::warn!(endpoint = endpoint.as_str(), reason, error = %err, "refused a request that cannot be understood");
        match err.uid() {
            Some(uid) => Answer::Review(Response::deny(uid, 400, err.to_string()).to_review_json()),
            None => Answer::BadRequest(err.to_string()),
        }
    }

    fn record(&self, endpoint: Endpoint, req: &AdmissionRequest, d: &Decision, took: Duration) {
        let label = d.label();
        let m = &self.metrics;
        m.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.as_str().into(),
                kind: m.kind_label(&req.kind.kind),
                operation: req.operation.as_str().into(),
                decision: label.into(),
            })
            .inc();
        m.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str().into(),
            })
            .observe(took.as_secs_f64());
        for hit in &d.hits {
            m.violations
                .get_or_create(&ViolationLabels {
                    policy: hit.policy.clone(),
                    action: hit.action.as_str().into(),
                })
                .inc();
        }
        let latency_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // Debug, not info: the decision log already holds one line per review; an info line on
        // top doubled the output and cost a tenth of the CPU under load (docs/performance.md).
        tracing::debug!(
            uid = %req.uid,
            endpoint = endpoint.as_str(),
            kind = %req.kind.kind,
            object = %req.display_name(),
            operation = %req.operation,
            decision = label,
            latency_us,
            "review"
        );
        self.events.observe(endpoint, req, d);
        let record = record_of(endpoint, req, d, latency_us, self.log.include_objects());
        if let Some(recent) = &self.recent {
            recent.push(record.clone());
        }
        self.log.record(record);
    }
}

/// The log line for one decision.
pub fn record_of(
    endpoint: Endpoint,
    req: &AdmissionRequest,
    d: &Decision,
    latency_us: u64,
    include_object: bool,
) -> DecisionRecord {
    DecisionRecord {
        time: Utc::now(),
        uid: req.uid.clone(),
        endpoint: endpoint.as_str().into(),
        user: req.user_info.username.clone(),
        groups: req.user_info.groups.clone(),
        operation: req.operation.as_str().into(),
        group: req.kind.group.clone(),
        version: req.kind.version.clone(),
        kind: req.kind.kind.clone(),
        namespace: req.namespace.clone(),
        name: req.name.clone(),
        dry_run: req.dry_run,
        allowed: d.response.allowed,
        decision: d.label().into(),
        message: d.response.status.as_ref().map(|s| s.message.clone()),
        policies: d.hits.clone(),
        mutations: d.mutations.clone(),
        latency_us,
        object: if include_object {
            crate::audit::loggable_object(req)
        } else {
            None
        },
        shadow: None,
    }
}

/// Mutation outcome → answer. A refusal from mutation is a 403 with no patch.
pub fn decide_mutation(req: &AdmissionRequest, outcome: MutationOutcome) -> Decision {
    let MutationOutcome {
        patch,
        mutations,
        warnings,
        denial,
        audit_annotations,
    } = outcome;
    let mut response = match denial {
        Some(message) => Response::deny(&req.uid, 403, message),
        None => {
            let mut r = Response::allow(&req.uid);
            r.patch = patch;
            r
        }
    };
    response.warnings = warnings;
    response.audit_annotations = audit_annotations;
    if !mutations.is_empty() {
        response
            .audit_annotations
            .insert("mutations".into(), mutations_annotation(&mutations));
    }
    Decision {
        response,
        hits: Vec::new(),
        mutations,
    }
}

/// Longest `mutations` audit annotation: the API server keeps audit annotations in every audit
/// event, so a pod with hundreds of containers must not put kilobytes there. The decision log
/// keeps the whole list.
const MAX_MUTATIONS_ANNOTATION: usize = 1024;

/// The changes, comma-separated, cut after whole entries with a count of what was left out.
fn mutations_annotation(mutations: &[String]) -> String {
    let mut text = String::new();
    for (i, m) in mutations.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        if text.len() + sep.len() + m.len() > MAX_MUTATIONS_ANNOTATION {
            text.push_str(&format!("{sep}… and {} more", mutations.len() - i));
            break;
        }
        text.push_str(sep);
        text.push_str(m);
    }
    text
}

/// Policy hits → answer: every deny-policy in the message, warn-policies as warnings, dry-run
/// policies only in the record; the API server's audit log learns which policies fired.
pub fn decide_validation(req: &AdmissionRequest, hits: Vec<PolicyHit>) -> Decision {
    let mut denied = Vec::new();
    let mut warnings = Vec::new();
    let mut by_action: BTreeMap<&'static str, Vec<&str>> = BTreeMap::new();
    for hit in &hits {
        let line = format!("[{}] {}", hit.policy, hit.message);
        match hit.action {
            Action::Deny => denied.push(line),
            Action::Warn => warnings.push(line),
            Action::Dryrun => {}
        }
        let names = by_action.entry(hit.action.as_str()).or_default();
        if !names.contains(&hit.policy.as_str()) {
            names.push(&hit.policy);
        }
    }
    let mut response = if denied.is_empty() {
        Response::allow(&req.uid)
    } else {
        Response::deny(&req.uid, 403, denied.join("\n"))
    };
    response.warnings = warnings;
    for (action, names) in by_action {
        response
            .audit_annotations
            .insert(format!("policies-{action}"), names.join(","));
    }
    Decision {
        response,
        hits,
        mutations: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_mutation_lists_are_cut_in_the_annotation() {
        let few = vec!["a=1".to_string(), "b=2".to_string()];
        assert_eq!(super::mutations_annotation(&few), "a=1, b=2");
        let many: Vec<String> = (0..500)
            .map(|i| format!("containers[c{i}] hardened"))
            .collect();
        let text = super::mutations_annotation(&many);
        assert!(
            text.len() <= super::MAX_MUTATIONS_ANNOTATION + 40,
            "{}",
            text.len()
        );
        assert!(text.starts_with("containers[c0] hardened, "), "{text}");
        assert!(text.ends_with(" more"), "{text}");
    }

    use super::*;
    use serde_json::json;

    fn req() -> AdmissionRequest {
        AdmissionRequest::from_value(json!({
            "uid": "u", "kind": {"group": "agents.x-k8s.io", "version": "v1beta1", "kind": "Sandbox"},
            "resource": {"group": "agents.x-k8s.io", "version": "v1beta1", "resource": "sandboxes"},
            "operation": "CREATE", "object": {}
        }))
        .unwrap()
    }

    fn hit(policy: &str, action: Action, message: &str) -> PolicyHit {
        PolicyHit {
            policy: policy.into(),
            action,
            message: message.into(),
        }
    }

    #[test]
    fn every_deny_policy_is_named_and_warnings_kept_apart() {
        let d = decide_validation(
            &req(),
            vec![
                hit("a", Action::Deny, "first"),
                hit("b", Action::Deny, "second"),
                hit("c", Action::Warn, "careful"),
                hit("d", Action::Dryrun, "quiet"),
            ],
        );
        assert!(!d.response.allowed);
        let status = d.response.status.clone().unwrap();
        assert_eq!(status.code, 403);
        assert_eq!(status.message, "[a] first\n[b] second");
        assert_eq!(d.response.warnings, vec!["[c] careful"]);
        assert_eq!(d.response.audit_annotations["policies-deny"], "a,b");
        assert_eq!(d.response.audit_annotations["policies-dryrun"], "d");
        assert_eq!(d.label(), "denied");
    }

    #[test]
    fn warn_only_is_allowed_with_warnings() {
        let d = decide_validation(&req(), vec![hit("c", Action::Warn, "careful")]);
        assert!(d.response.allowed);
        assert_eq!(d.label(), "warned");
    }

    /// The pipeline hands every decision to the Events handle; denials become Events.
    #[tokio::test]
    async fn a_recorded_denial_becomes_an_event() {
        use crate::audit::events::{EventSink, EventsConfig, PolicyEvent};
        use std::sync::Mutex;
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<PolicyEvent>>>);
        impl EventSink for Sink {
            async fn emit(&self, e: &PolicyEvent) -> Result<(), String> {
                self.0.lock().unwrap().push(e.clone());
                Ok(())
            }
        }
        let sink = Sink::default();
        let metrics = Arc::new(Metrics::new());
        let admitter = Admitter::build(
            Arc::new(Config::embedded().unwrap()),
            None,
            None,
            metrics.clone(),
            DecisionLog::disabled(metrics.clone()),
            Events::spawn(sink.clone(), &EventsConfig::default(), metrics.clone()),
        )
        .unwrap();
        let r = req();
        let denied = decide_validation(&r, vec![hit("a", Action::Deny, "no")]);
        admitter.record(Endpoint::Validate, &r, &denied, Duration::ZERO);
        let allowed = decide_validation(&r, vec![]);
        admitter.record(Endpoint::Validate, &r, &allowed, Duration::ZERO);
        for _ in 0..10_000 {
            if metrics.events_sent.get() > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let seen = sink.0.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].reason, "PolicyViolation");
        assert!(
            seen[0].note.ends_with("denied at /validate: [a] no"),
            "{}",
            seen[0].note
        );
    }

    #[test]
    fn mutation_denial_drops_the_patch() {
        let outcome = MutationOutcome {
            patch: serde_json::from_value(json!([{"op": "add", "path": "/a", "value": 1}]))
                .unwrap(),
            denial: Some("no such profile".into()),
            ..Default::default()
        };
        let d = decide_mutation(&req(), outcome);
        assert!(!d.response.allowed);
        assert!(d.response.patch.is_empty());
    }
}
