//! Rego validation (`/validate`): Gatekeeper-compatible policies evaluated with regorus.
//!
//! A policy set is read from a [`PolicySource`], compiled once into one warmed engine
//! ([`set::PolicySet`]) and served from an [`arc_swap::ArcSwap`], so a reload never blocks or
//! changes a request already being judged. See `policies/README.md` for the authoring contract.

pub mod cli;
mod compile;
mod compiled;
mod eval;
mod explain;
mod gatekeeper;
mod meta;
mod recursion;
mod reload;
mod schema;
mod set;
mod source;
mod testing;
mod verify;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admission::AdmissionRequest;
use crate::metrics::Metrics;

/// Stack for every thread that loads or evaluates policies (the server's runtime workers and
/// blocking threads, the reload and shadow threads). Rule evaluations and calls nest on the
/// native stack up to regorus's bound of 128; 8 MiB (Linux's main-thread default) holds that
/// bound in a debug build with room to spare, where 2 MiB (Rust's and tokio's thread default)
/// did not, and an overflow aborts the process.
pub const EVALUATION_STACK_BYTES: usize = 8 << 20;

pub use compiled::EvaluatorKind;
pub use eval::{CONTEXT_KEY, EvalContext, ReferenceCase};
pub use explain::{Expression, Firing, Miss, PolicyExplanation};
pub use reload::WatchGuard;
pub use set::PolicySet;
pub use source::{PolicySource, SourceFile};
pub use testing::{
    CheckSummary, FileCoverage, TestOutcome, TestReport, TestResult, check, check_profile,
    run_tests,
};
pub use verify::{CaseResult, VerifyReport, verify};

/// Policy settings (the `policy:` section of the configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    /// Wall-clock budget of one evaluation; a policy set that runs longer denies (fail closed).
    #[serde(default = "default_timeout_ms")]
    pub evaluation_timeout_ms: u64,
    /// Quiet period after the last change in the policy directory before it is reloaded.
    #[serde(default = "default_debounce_ms")]
    pub reload_debounce_ms: u64,
    /// Which profile of the set runs: each policy's metadata may change its action, parameters
    /// or presence under a profile (`profiles:`). Shipped: `default` and `strict`.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// What runs the policies: the compiled evaluator (regorus's RVM, the default) or the
    /// interpreter. A set the RVM cannot run is served by the interpreter whatever this says,
    /// and `/readyz` and `sandbox_admission_policy_evaluator` say so.
    #[serde(default)]
    pub evaluator: EvaluatorChoice,
}

/// `policy.evaluator`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvaluatorChoice {
    #[default]
    Compiled,
    Interpreter,
}

fn default_profile() -> String {
    meta::DEFAULT_PROFILE.into()
}

/// Well under the webhook's `timeoutSeconds` (5 s in the shipped manifests), and roomy enough that
/// a loaded node or an unoptimised build never turns a slow evaluation into a spurious denial.
fn default_timeout_ms() -> u64 {
    1000
}
/// Long enough to gather the several events of one ConfigMap `..data` swap into one reload.
fn default_debounce_ms() -> u64 {
    100
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            evaluation_timeout_ms: default_timeout_ms(),
            reload_debounce_ms: default_debounce_ms(),
            profile: default_profile(),
            evaluator: EvaluatorChoice::default(),
        }
    }
}

impl PolicyConfig {
    pub fn validate(&self) -> Result<(), String> {
        // The API server waits at most 30 s for the whole review; the policy budget must fit well
        // inside it, and at most twice (a combined run, then a per-policy run to name the culprit).
        if self.evaluation_timeout_ms == 0 || self.evaluation_timeout_ms > 10_000 {
            return Err("policy.evaluationTimeoutMs must be within 1..=10000".into());
        }
        if self.reload_debounce_ms > 60_000 {
            return Err("policy.reloadDebounceMs must be at most 60000".into());
        }
        if !meta::valid_policy_name(&self.profile) {
            return Err(format!(
                "policy.profile {:?} must be lowercase letters, digits and '-'",
                self.profile
            ));
        }
        Ok(())
    }

    pub fn evaluation_timeout(&self) -> Duration {
        Duration::from_millis(self.evaluation_timeout_ms)
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
    /// Where the serving set came from (`embedded` or a directory).
    pub source: String,
    /// The last reload failure, cleared by the next successful reload.
    pub last_error: Option<String>,
    /// What runs the serving set, and why when it is not the compiled evaluator.
    pub evaluator: EvaluatorKind,
}

/// One problem in a policy set, located as precisely as the source allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadIssue {
    pub file: String,
    pub line: Option<u32>,
    pub message: String,
}

impl fmt::Display for LoadIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Why a policy set was rejected. A set with any issue is rejected whole.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PolicyLoadError {
    pub issues: Vec<LoadIssue>,
}

impl PolicyLoadError {
    pub fn one(file: impl Into<String>, line: Option<u32>, message: impl Into<String>) -> Self {
        PolicyLoadError {
            issues: vec![LoadIssue {
                file: file.into(),
                line,
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for PolicyLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.issues.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// The serving policy set, swappable while requests are being judged.
///
/// `data.inventory` is layered onto the compiled set whenever either changes (a reload, or the
/// watch caches), and the result is what requests clone: a request never pays for the inventory.
pub struct PolicyStore {
    current: ArcSwap<PolicySet>,
    /// The compiled set and the inventory it is served with; one lock so a reload and an
    /// inventory change never layer onto each other's stale half.
    layers: Mutex<Layers>,
    last_error: Mutex<Option<String>>,
    config: PolicyConfig,
    metrics: Arc<Metrics>,
    /// Bumped after every successful reload, for the background audit.
    reloads: tokio::sync::watch::Sender<u64>,
    /// A shadow set (`serve --shadow-policies`) counts its reloads and size in the `shadow_*`
    /// metrics, so that it never reads as the serving set.
    shadow: bool,
}

struct Layers {
    compiled: Arc<PolicySet>,
    /// `None`: no inventory is kept (no cluster access), so `data.inventory` stays as compiled.
    inventory: Option<Arc<Value>>,
}

impl PolicyHit {
    /// The policy could not be evaluated (an error or time-out), as opposed to a violation.
    pub fn is_evaluation_failure(&self) -> bool {
        eval::is_failure_message(&self.message)
    }
}

impl PolicyStore {
    /// A store with no policies: validation admits everything, and `/readyz` says 0 policies.
    pub fn empty() -> Self {
        let config = PolicyConfig::default();
        let set = Arc::new(PolicySet::empty(&config));
        PolicyStore {
            current: ArcSwap::new(set.clone()),
            layers: Mutex::new(Layers {
                compiled: set,
                inventory: None,
            }),
            last_error: Mutex::new(None),
            config,
            metrics: Arc::new(Metrics::new()),
            reloads: tokio::sync::watch::Sender::new(0),
            shadow: false,
        }
    }

    /// Read and compile a policy set; fails when any file is wrong (nothing half-loaded).
    pub fn load(
        source: &PolicySource,
        config: &PolicyConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<PolicyStore>, PolicyLoadError> {
        Self::load_as(source, config, metrics, false)
    }

    /// [`PolicyStore::load`] for a shadow set: judged beside the serving set, never answering.
    pub fn load_shadow(
        source: &PolicySource,
        config: &PolicyConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<PolicyStore>, PolicyLoadError> {
        Self::load_as(source, config, metrics, true)
    }

    fn load_as(
        source: &PolicySource,
        config: &PolicyConfig,
        metrics: Arc<Metrics>,
        shadow: bool,
    ) -> Result<Arc<PolicyStore>, PolicyLoadError> {
        let set = PolicySet::compile(&source.read()?, source.describe(), config)?;
        let count = set.len();
        let set = Arc::new(set);
        let store = PolicyStore {
            current: ArcSwap::new(set.clone()),
            layers: Mutex::new(Layers {
                compiled: set,
                inventory: None,
            }),
            last_error: Mutex::new(None),
            config: config.clone(),
            metrics,
            reloads: tokio::sync::watch::Sender::new(0),
            shadow,
        };
        store.size_gauge().set(gauge_value(count));
        store.record_evaluator(&store.current.load());
        Ok(Arc::new(store))
    }

    /// `sandbox_admission_policy_evaluator` for `set`, and a fallback counted.
    fn record_evaluator(&self, set: &PolicySet) {
        let which = if self.shadow { "shadow" } else { "serving" };
        let kind = set.evaluator();
        for evaluator in ["rvm", "interpreter"] {
            let labels = crate::metrics::EvaluatorLabels {
                set: which.into(),
                evaluator: evaluator.into(),
            };
            let on = i64::from(kind.name() == evaluator);
            self.metrics.policy_evaluator.get_or_create(&labels).set(on);
        }
        if let EvaluatorKind::Interpreter(why) = &kind
            && self.config.evaluator == EvaluatorChoice::Compiled
            && !set.is_empty()
        {
            self.metrics
                .policy_evaluator_fallbacks
                .get_or_create(&crate::metrics::SetLabels { set: which.into() })
                .inc();
            tracing::warn!(set = which, reason = %why, "policy set runs on the interpreter");
        }
    }

    fn size_gauge(&self) -> &prometheus_client::metrics::gauge::Gauge {
        if self.shadow {
            &self.metrics.shadow_policies
        } else {
            &self.metrics.policies
        }
    }

    fn reload_family(
        &self,
    ) -> &prometheus_client::metrics::family::Family<
        crate::metrics::ResultLabels,
        prometheus_client::metrics::counter::Counter,
    > {
        if self.shadow {
            &self.metrics.shadow_policy_reloads
        } else {
            &self.metrics.policy_reloads
        }
    }

    /// Serve `inventory` (Gatekeeper's layout, see [`crate::cluster::inventory`]) as
    /// `data.inventory` from now on, and with every set reloaded later.
    pub fn set_inventory(&self, inventory: Arc<Value>) -> Result<(), String> {
        let mut layers = self.layers();
        let layered = layers.compiled.with_inventory((*inventory).clone())?;
        self.current.store(Arc::new(layered));
        layers.inventory = Some(inventory);
        Ok(())
    }

    /// The `data.inventory` being served, if one is kept.
    pub fn inventory(&self) -> Option<Arc<Value>> {
        self.layers().inventory.clone()
    }

    /// Tells of every successful reload (the value counts them).
    pub fn subscribe_reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Judge one request against the policies that match its kind, operation and namespace.
    pub fn evaluate(&self, req: &AdmissionRequest, namespace: Option<&Value>) -> Vec<PolicyHit> {
        // The whole evaluation uses the set it started with, even if a reload swaps meanwhile.
        self.current.load_full().evaluate(req, namespace)
    }

    /// Judge one request with what the server knows beyond it (effective pod, runtimes).
    pub fn evaluate_with(&self, req: &AdmissionRequest, ctx: &EvalContext<'_>) -> Vec<PolicyHit> {
        self.current.load_full().evaluate_with(req, ctx)
    }

    pub fn status(&self) -> PolicyStatus {
        let set = self.current.load();
        PolicyStatus {
            loaded: true,
            policies: set.len(),
            source: set.origin().to_owned(),
            last_error: self.last_error().clone(),
            evaluator: set.evaluator(),
        }
    }

    /// The serving set (for tests and the offline `review` command).
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Read, compile and swap in a new set from `source`; on failure the serving set stays.
    pub fn reload(&self, source: &PolicySource) -> Result<usize, PolicyLoadError> {
        let compiled = source
            .read()
            .and_then(|files| PolicySet::compile(&files, source.describe(), &self.config));
        let compiled = compiled.and_then(|set| {
            let mut layers = self.layers();
            let serving = match &layers.inventory {
                None => None,
                Some(inventory) => Some(
                    set.with_inventory((**inventory).clone())
                        .map_err(|e| PolicyLoadError::one(source.describe(), None, e))?,
                ),
            };
            let set = Arc::new(set);
            layers.compiled = set.clone();
            let count = set.len();
            // Stored under the lock: an inventory change cannot slip in between.
            self.current.store(serving.map_or(set, Arc::new));
            Ok(count)
        });
        match compiled {
            Ok(count) => {
                self.reloads.send_modify(|n| *n += 1);
                *self.last_error() = None;
                self.size_gauge().set(gauge_value(count));
                self.record_evaluator(&self.current.load());
                self.metrics.reload(self.reload_family(), true);
                tracing::info!(policies = count, source = %source.describe(), "policy set reloaded");
                Ok(count)
            }
            Err(err) => {
                *self.last_error() = Some(err.to_string());
                self.metrics.reload(self.reload_family(), false);
                tracing::error!(source = %source.describe(), error = %err, "policy set rejected; the previous set keeps serving");
                Err(err)
            }
        }
    }

    fn layers(&self) -> std::sync::MutexGuard<'_, Layers> {
        // Both fields are replaced whole, never left half-written by a panic.
        self.layers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn last_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A panic while holding this lock cannot leave the Option half-written; keep serving.
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
