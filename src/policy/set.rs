//! A compiled policy set: one warmed regorus engine holding every policy and library module,
//! plus what is needed to evaluate just the matching policies in a single query.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;

use regorus::Engine;
use regorus::utils::limits::ExecutionTimerConfig;
use serde::Deserialize;
use serde_json::{Map, json};

use super::compile::{self, Role};
use super::compiled::{CompiledSet, EvaluatorKind};
use super::gatekeeper;
use super::meta::{FailurePolicy, Metadata};
use super::{Action, EvaluatorChoice, LoadIssue, PolicyConfig, PolicyLoadError, SourceFile};

/// Where each policy's parameters live in `data`; `with input.parameters as` reads them there.
pub(in crate::policy) const PARAMS_ROOT: &str = "__sandbox_admission";

/// Work units between clock reads: frequent enough to stop a runaway policy within
/// milliseconds, rare enough that reading the clock costs nothing measurable.
const TIMER_CHECK_INTERVAL: u32 = 64;

/// A policy found while reading the set, before its name and `violation` rule are checked.
pub(in crate::policy) struct Pending {
    /// The module it is evaluated from (a `.rego` file, or a template's `file#document`).
    pub path: String,
    pub package: String,
    pub meta: Metadata,
    /// Where its parameters live under `data.__sandbox_admission.parameters`.
    pub key: String,
    /// Whether the module reads its parameters from `data` directly (no `with` needed).
    pub direct: bool,
}

/// One policy, ready to be evaluated.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub file: String,
    pub action: Action,
    pub failure: FailurePolicy,
    pub(super) meta: Metadata,
    /// Its package as a reference (`data.sandbox.example`).
    pub(super) package: String,
    /// The query statement binding this policy's violations to `binding` (used alone to pin an
    /// evaluation failure on this policy, and by the load probe).
    pub(super) statement: String,
    pub(super) binding: String,
    /// Its `violation` rule (`data.sandbox.example.violation`).
    pub(super) rule: String,
    /// For a policy whose module reads `input.parameters` as written (a Gatekeeper template with
    /// several constraints, or a library reading `input`): its parameters, to be placed in
    /// `input.parameters` for an evaluation of its own, as Gatekeeper evaluates each constraint.
    /// Such policies are not in the verdicts module, so that module needs no `with` (which the
    /// RVM lacks and which drops the interpreter's rule cache).
    pub(super) separate: Option<regorus::Value>,
}

pub struct PolicySet {
    pub(super) engine: Engine,
    pub(super) policies: Vec<Policy>,
    origin: String,
    /// The verdicts rule for each (group, kind) some policy names exactly: it lists only the
    /// policies that can match that kind, so policies loaded for other kinds cost nothing.
    pub(super) entries: EntryRules,
    /// The set compiled for the RVM, or why it runs on the interpreter.
    pub(super) compiled: Result<Arc<CompiledSet>, String>,
    /// Run lists already built, by the policies they name.
    pub(super) run_lists: RunLists,
}

/// The run lists of recent requests. Requests of one kind and operation name the same
/// policies, and finding their run list is cheaper than building the object again (a B-tree
/// insert per policy, ~15 k instructions for a Sandbox review of the shipped set).
#[derive(Debug, Default)]
pub(super) struct RunLists(std::sync::Mutex<Vec<(Vec<usize>, regorus::Value)>>);

/// Distinct run lists kept: a set has a handful (one per kind, operation and namespace rule
/// that tells its policies apart); past this the list starts again, so it never grows.
const MAX_RUN_LISTS: usize = 64;

impl RunLists {
    /// The run list naming `policies` (indices in set order), built by `build` when not kept.
    pub(super) fn get(
        &self,
        policies: &[usize],
        build: impl FnOnce() -> regorus::Value,
    ) -> regorus::Value {
        if let Ok(kept) = self.0.lock()
            && let Some((_, run)) = kept.iter().find(|(named, _)| named == policies)
        {
            return run.clone();
        }
        let run = build();
        if let Ok(mut kept) = self.0.lock() {
            if kept.len() >= MAX_RUN_LISTS {
                kept.clear();
            }
            kept.push((policies.to_vec(), run.clone()));
        }
        run
    }
}

/// Entry rules of the verdicts module by request kind.
#[derive(Debug, Clone, Default)]
pub(super) struct EntryRules {
    /// By group, then kind: looked up with the request's own strings, nothing built.
    by_kind: HashMap<String, HashMap<String, String>>,
    /// Policies matching any kind (`*` in their group or kind): requests of a kind no policy
    /// names exactly are judged by these alone.
    other: String,
    /// Each policy's key in the run list and in the verdicts (its index, as text), made once
    /// rather than for every policy of every request.
    keys: Vec<regorus::Value>,
}

impl EntryRules {
    /// The rule to evaluate for a request of `group`/`kind`.
    pub(super) fn rule_for(&self, group: &str, kind: &str) -> &str {
        self.by_kind
            .get(group)
            .and_then(|kinds| kinds.get(kind))
            .map_or(self.other.as_str(), String::as_str)
    }

    /// Policy `i`'s key in the run list and the verdicts object.
    pub(super) fn key(&self, i: usize) -> regorus::Value {
        self.keys
            .get(i)
            .cloned()
            .unwrap_or_else(|| regorus::Value::from(i.to_string()))
    }

    /// Every entry rule, and the rule gathering all policies: the compiled program's entry points.
    fn all_rules(&self) -> Vec<&str> {
        let mut rules = vec![VERDICTS_RULE, self.other.as_str()];
        rules.extend(
            self.by_kind
                .values()
                .flat_map(|k| k.values().map(String::as_str)),
        );
        rules
    }
}

impl PolicySet {
    pub fn empty(config: &PolicyConfig) -> Self {
        let mut engine = Engine::new();
        set_timer(&mut engine, config);
        PolicySet {
            engine,
            policies: Vec::new(),
            origin: "none".into(),
            entries: EntryRules::default(),
            compiled: Err("no policies".into()),
            run_lists: RunLists::default(),
        }
    }

    /// Which evaluator runs this set's policies.
    pub fn evaluator(&self) -> EvaluatorKind {
        match &self.compiled {
            Ok(_) => EvaluatorKind::Compiled,
            Err(why) => EvaluatorKind::Interpreter(why.clone()),
        }
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn policy_names(&self) -> Vec<&str> {
        self.policies.iter().map(|p| p.name.as_str()).collect()
    }

    /// Compile `files` (tests are skipped). Every problem is collected, not just the first.
    pub fn compile(
        files: &[SourceFile],
        origin: String,
        config: &PolicyConfig,
    ) -> Result<PolicySet, PolicyLoadError> {
        let mut engine = Engine::new();
        set_timer(&mut engine, config);
        let mut issues = Vec::new();
        let by_path: BTreeMap<&str, &SourceFile> =
            files.iter().map(|f| (f.path.as_str(), f)).collect();
        let mut used_yaml = HashSet::new();
        let mut pending = Vec::new();
        let mut packages: BTreeMap<String, String> = BTreeMap::new();
        let mut profile_known = config.profile == super::meta::DEFAULT_PROFILE;

        for (file_index, file) in files
            .iter()
            .filter(|f| compile::is_rego(&f.path))
            .enumerate()
        {
            if compile::is_test_file(&file.path) {
                continue;
            }
            let key = format!("f{file_index}");
            let direct =
                direct_parameters(&file.text, &format!("data.{PARAMS_ROOT}.parameters.{key}"));
            let module = SourceFile {
                path: file.path.clone(),
                text: direct.clone().unwrap_or_else(|| file.text.clone()),
            };
            let package = match compile::add_module(&mut engine, &module) {
                Ok(p) => p,
                Err(issue) => {
                    issues.push(issue);
                    continue;
                }
            };
            if package.starts_with("data.__sandbox_admission") {
                issues.push(issue(
                    &file.path,
                    format!("package {package} is reserved for sandbox-admission's own modules"),
                ));
                continue;
            }
            if compile::role_of(&file.path, &package) == Role::Library {
                packages.insert(package, file.path.clone());
                continue;
            }
            if let Some(other) = packages.insert(package.clone(), file.path.clone()) {
                issues.push(issue(&file.path, format!("{package} is also the package of policy {other}; each policy needs its own package")));
                continue;
            }
            let meta_path = compile::metadata_paths(&file.path)
                .into_iter()
                .find(|p| by_path.contains_key(p.as_str()));
            let Some(meta_path) = meta_path else {
                issues.push(issue(
                    &file.path,
                    format!(
                        "policy has no metadata file (expected {})",
                        compile::metadata_paths(&file.path)[0]
                    ),
                ));
                continue;
            };
            used_yaml.insert(meta_path.clone());
            let text = by_path
                .get(meta_path.as_str())
                .map_or("", |f| f.text.as_str());
            match Metadata::parse(text) {
                Ok(meta) => {
                    if meta.profiles.contains_key(&config.profile) {
                        profile_known = true;
                    }
                    match meta.under_profile(&config.profile) {
                        Ok(Some(meta)) => pending.push(Pending {
                            path: file.path.clone(),
                            package,
                            meta,
                            key,
                            direct: direct.is_some(),
                        }),
                        Ok(None) => {}
                        Err(message) => issues.push(LoadIssue {
                            file: meta_path,
                            line: None,
                            message: format!("invalid metadata: {message}"),
                        }),
                    }
                }
                Err((line, message)) => issues.push(LoadIssue {
                    file: meta_path,
                    line,
                    message: format!("invalid metadata: {message}"),
                }),
            }
        }
        let mut gatekeeper = gatekeeper::Parsed::default();
        for file in files.iter().filter(|f| compile::is_yaml(&f.path)) {
            let base = file.path.rsplit('/').next().unwrap_or(&file.path);
            let stem = file
                .path
                .rsplit_once('.')
                .map_or(file.path.as_str(), |(s, _)| s);
            let has_rego = by_path.contains_key(format!("{stem}.rego").as_str());
            if used_yaml.contains(&file.path) || has_rego || base.starts_with("kustomization.") {
                continue;
            }
            // Not metadata: Kubernetes objects (Gatekeeper templates and constraints) or a stray.
            let docs = match gatekeeper::documents(file) {
                Ok(docs) => docs,
                Err(found) => {
                    issues.push(found);
                    continue;
                }
            };
            if !gatekeeper::holds_objects(&docs) {
                issues.push(issue(
                    &file.path,
                    "metadata file without a policy beside it (expected a .rego of the same name)"
                        .into(),
                ));
                continue;
            }
            match gatekeeper::parse_file(file, &docs) {
                Ok(parsed) => {
                    gatekeeper.templates.extend(parsed.templates);
                    gatekeeper.constraints.extend(parsed.constraints);
                }
                Err(found) => issues.extend(found),
            }
        }
        if !profile_known && files.iter().any(|f| compile::is_rego(&f.path)) {
            issues.push(issue(
                &origin,
                format!(
                    "profile {:?} is named by no policy's metadata (`profiles:`); check policy.profile / --profile",
                    config.profile
                ),
            ));
        }
        let has_templates = !gatekeeper.templates.is_empty();
        gatekeeper::load::add_all(
            &mut engine,
            gatekeeper,
            &mut packages,
            &mut pending,
            &mut issues,
        );

        let mut policies = Vec::new();
        let mut params = Map::new();
        let mut names = HashSet::new();
        for (index, pend) in pending.into_iter().enumerate() {
            let Pending {
                path,
                package,
                meta,
                key,
                direct,
            } = pend;
            let name = meta.name.clone().unwrap_or_else(|| stem(&path));
            if !super::meta::valid_policy_name(&name) {
                issues.push(issue(&path, format!("policy name {name:?} (from the file name) must be lowercase letters, digits, '-' and '.'; set `name` in the metadata")));
                continue;
            }
            if !names.insert(name.clone()) {
                issues.push(issue(&path, format!("policy name {name:?} is used twice")));
                continue;
            }
            if !compile::plain_package(&package) {
                issues.push(issue(
                    &path,
                    format!("package {package} must be dotted identifiers"),
                ));
                continue;
            }
            match engine.has_declared_rule_rooted_at(&path, "violation") {
                Ok(true) => {}
                Ok(false) => {
                    issues.push(issue(
                        &path,
                        format!("{package} defines no `violation` rule"),
                    ));
                    continue;
                }
                Err(e) => {
                    issues.push(compile::issue_from(&path, &e));
                    continue;
                }
            }
            let binding = format!("__r{index}");
            // A `with` makes regorus drop every cached rule value, so shared helpers would be
            // recomputed for each policy; policies whose parameters were rewritten need none.
            let violations = if direct {
                format!("v := {package}.violation[_]")
            } else {
                format!(
                    "v := {package}.violation[_] with input.parameters as data.{PARAMS_ROOT}.parameters.{key}"
                )
            };
            let statement = format!("{binding} := [v | {violations}]");
            let separate = if direct {
                None
            } else {
                match regorus::Value::deserialize(&meta.parameters) {
                    Ok(value) => Some(value),
                    Err(e) => {
                        issues.push(issue(
                            &path,
                            format!("parameters cannot be given to the policy: {e}"),
                        ));
                        continue;
                    }
                }
            };
            params.insert(key, meta.parameters.clone());
            policies.push(Policy {
                name,
                file: path.clone(),
                action: meta.enforcement_action,
                failure: meta.failure_policy,
                meta,
                package: package.clone(),
                statement,
                binding,
                rule: format!("{package}.violation"),
                separate,
            });
        }
        if issues.is_empty() {
            issues.extend(super::recursion::find_recursion(&mut engine));
        }
        if !issues.is_empty() {
            return Err(PolicyLoadError { issues });
        }
        let (verdicts, entries) = verdicts_module(&policies);
        if let Err(e) = engine.add_policy(VERDICTS_FILE.into(), verdicts) {
            return Err(PolicyLoadError::one(
                origin,
                None,
                format!("cannot build the verdicts module: {e}"),
            ));
        }
        let mut data = json!({PARAMS_ROOT: {"parameters": params}});
        if has_templates {
            // Gatekeeper's replicated cluster state: this webhook replicates nothing.
            data["inventory"] = json!({});
        }
        if let Err(e) = engine.add_data(regorus::Value::from(data)) {
            return Err(PolicyLoadError::one(
                origin,
                None,
                format!("cannot add parameters: {e}"),
            ));
        }
        // Warm: analyse and schedule every module now, so compile errors (unknown functions,
        // unsafe variables, recursion) reject the set here and requests only clone a ready engine.
        if let Err(e) = warm(&mut engine) {
            return Err(PolicyLoadError {
                issues: vec![compile::issue_from(&origin, &e)],
            });
        }
        let mut set = PolicySet {
            engine,
            policies,
            origin,
            entries,
            compiled: Err(String::new()),
            run_lists: RunLists::default(),
        };
        let probed = set.probe()?;
        set.compiled = match config.evaluator {
            EvaluatorChoice::Interpreter => Err("policy.evaluator is interpreter".into()),
            EvaluatorChoice::Compiled => set.compile_program(config, &probed).map(Arc::new),
        };
        Ok(set)
    }

    /// The set as one RVM program, checked on the load probe against the interpreter's verdicts:
    /// a set that does not compile, fails on the VM, or gives other verdicts is not compiled.
    fn compile_program(
        &self,
        config: &PolicyConfig,
        probed: &Probed,
    ) -> Result<CompiledSet, String> {
        let mut entry_points = self.entries.all_rules();
        for policy in self.policies.iter().filter(|p| p.separate.is_some()) {
            if !entry_points.contains(&policy.rule.as_str()) {
                entry_points.push(&policy.rule);
            }
        }
        let compiled = CompiledSet::build(&self.engine, &entry_points, timer(config))
            .map_err(|e| format!("the RVM cannot compile the set: {e}"))?;
        let shown = |v: &regorus::Value| v.to_json_str().unwrap_or_default();
        let disagreement = |name: &str, vm: &regorus::Value, interpreted: &regorus::Value| {
            format!(
                "{name} (RVM {}, interpreter {})",
                shown(vm),
                shown(interpreted)
            )
        };
        let on_vm = compiled
            .eval(VERDICTS_RULE, probe_input(self.policies.len()))
            .map_err(|e| format!("the set fails on the RVM on an empty review: {e:#}"))?;
        let mut differing = Vec::new();
        for (i, policy) in self.policies.iter().enumerate() {
            if policy.separate.is_some() {
                continue;
            }
            let key = regorus::Value::from(i.to_string());
            if on_vm[&key] != probed.combined[&key] {
                differing.push(disagreement(
                    &policy.name,
                    &on_vm[&key],
                    &probed.combined[&key],
                ));
            }
        }
        for (i, interpreted) in &probed.separate {
            let Some(policy) = self.policies.get(*i) else {
                continue;
            };
            let Some(params) = &policy.separate else {
                continue;
            };
            let input = super::eval::with_parameters(&empty_review(), params);
            let value = compiled.eval(&policy.rule, input).map_err(|e| {
                format!(
                    "policy {} fails on the RVM on an empty review: {e:#}",
                    policy.name
                )
            })?;
            if &value != interpreted {
                differing.push(disagreement(&policy.name, &value, interpreted));
            }
        }
        if !differing.is_empty() {
            return Err(format!(
                "the RVM and the interpreter disagree on an empty review: {}",
                differing.join("; ")
            ));
        }
        Ok(compiled)
    }

    /// A copy of this set whose `data.inventory` is `inventory` (a `policy verify` case's, or
    /// the watch caches'). Adding data makes regorus analyse the modules again, so it is done
    /// here once, not on each request's clone.
    pub(super) fn with_inventory(&self, inventory: serde_json::Value) -> Result<PolicySet, String> {
        let mut engine = self.engine.clone();
        engine
            .add_data(regorus::Value::from(json!({"inventory": inventory})))
            .map_err(|e| format!("cannot set data.inventory: {e}"))?;
        warm(&mut engine)
            .map_err(|e| format!("cannot prepare the policies with data.inventory: {e}"))?;
        let compiled = match &self.compiled {
            Ok(c) => Ok(Arc::new(c.with_data(engine.get_data()))),
            Err(why) => Err(why.clone()),
        };
        Ok(PolicySet {
            engine,
            policies: self.policies.clone(),
            origin: self.origin.clone(),
            entries: self.entries.clone(),
            compiled,
            run_lists: RunLists::default(),
        })
    }

    /// Evaluate every policy once against an empty review. regorus resolves function names only
    /// when a call is reached, so this is what turns a misspelt builtin into a load error (and
    /// the last good set keeps serving) instead of a denial of every request.
    /// The verdicts of the empty review are returned, for the compiled program's own probe.
    fn probe(&self) -> Result<Probed, PolicyLoadError> {
        let input = empty_review();
        // The probe runs at load, not on a request's clock: a slow (loaded, unoptimised) machine
        // must not turn the per-request limit into a load failure, so it gets a generous one.
        let mut probe_engine = self.engine.clone();
        probe_engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: PROBE_TIME_LIMIT,
            check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
        });
        let mut issues = Vec::new();
        let fails = |policy: &Policy, e: &anyhow::Error, issues: &mut Vec<LoadIssue>| {
            let mut found = compile::issue_from(&policy.file, e);
            found.message = format!("fails on an empty review: {}", found.message);
            issues.push(found);
        };
        // The combined policies in one evaluation first; only a failure needs each one alone,
        // to name it. If each passes alone there are no combined verdicts to hold the compiled
        // program to, and it will not be used for this set.
        let mut engine = probe_engine.clone();
        engine.set_input(probe_input(self.policies.len()));
        let combined = match engine.eval_rule(VERDICTS_RULE.into()) {
            Ok(verdicts) => verdicts,
            Err(_) => {
                for policy in self.policies.iter().filter(|p| p.separate.is_none()) {
                    let mut engine = probe_engine.clone();
                    engine.set_input(input.clone());
                    if let Err(e) = engine.eval_query(policy.statement.clone(), false) {
                        fails(policy, &e, &mut issues);
                    }
                }
                regorus::Value::Undefined
            }
        };
        let mut separate = Vec::new();
        for (i, policy) in self.policies.iter().enumerate() {
            let Some(params) = &policy.separate else {
                continue;
            };
            let mut engine = probe_engine.clone();
            engine.set_input(super::eval::with_parameters(&input, params));
            match engine.eval_rule(policy.rule.clone()) {
                Ok(value) => separate.push((i, value)),
                Err(e) => fails(policy, &e, &mut issues),
            }
        }
        if issues.is_empty() {
            Ok(Probed { combined, separate })
        } else {
            Err(PolicyLoadError { issues })
        }
    }
}

/// The interpreter's verdicts on the load probe's empty review.
struct Probed {
    /// The verdicts rule's value (`Undefined` when it failed though each policy passed alone).
    combined: regorus::Value,
    /// Each separately evaluated policy's `violation` value, by policy index.
    separate: Vec<(usize, regorus::Value)>,
}

/// The review the load probe judges: nothing in it, so every policy's guards are exercised on
/// absent fields.
fn empty_review() -> regorus::Value {
    regorus::Value::from(json!({
        "review": {"kind": {}, "object": {}, "operation": ""},
        "parameters": {},
    }))
}

/// The empty review with every one of `count` policies on the run list.
fn probe_input(count: usize) -> regorus::Value {
    let keys = (0..count).map(|i| regorus::Value::from(i.to_string()));
    super::eval::with_run_list(&empty_review(), super::eval::run_list(keys))
}

/// The generated module that gathers every policy's violations into one rule, so that a request
/// costs one evaluation (one rule cache, helpers computed once) and no query parsing.
const VERDICTS_FILE: &str = "<sandbox-admission verdicts>";
pub(super) const VERDICTS_RULE: &str = "data.__sandbox_admission_verdicts.all";
const VERDICTS_PACKAGE: &str = "data.__sandbox_admission_verdicts";
/// The input key naming the policies a request runs: `{"3": true, ...}` by policy index. Each
/// policy's rule is guarded by it, so policies that do not match the request cost nothing.
pub(super) const RUN_KEY: &str = "__sandbox_admission_run";

fn verdicts_module(policies: &[Policy]) -> (String, EntryRules) {
    let mut text = String::from("package __sandbox_admission_verdicts\n\nimport rego.v1\n\n");
    let mut all = Vec::with_capacity(policies.len());
    // Which policies each exactly named (group, kind) can reach, and those matching any kind.
    let mut by_kind: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    let mut any_kind = Vec::new();
    for (i, policy) in policies.iter().enumerate() {
        if policy.separate.is_some() {
            continue;
        }
        // The rule's own value (a set), not a comprehension over it: iterating a set of
        // violation objects in the VM compares each element with its neighbours in the tree,
        // deep objects included; the set is turned into a list once, natively (`as_list`).
        text.push_str(&format!(
            "default p{i} := []\n\np{i} := {} if input.{RUN_KEY}[\"{i}\"]\n",
            policy.rule
        ));
        all.push(i);
        for k in &policy.meta.kinds {
            if k.group == "*" || k.kind == "*" {
                any_kind.push(i);
            } else {
                by_kind
                    .entry((k.group.clone(), k.kind.clone()))
                    .or_default()
                    .push(i);
            }
        }
    }
    any_kind.dedup();
    // One entry a line: regorus refuses lines over 1,024 columns.
    let rule = |name: &str, members: &[usize]| {
        let lines: String = members
            .iter()
            .map(|i| format!("\t\"{i}\": p{i},\n"))
            .collect();
        format!("\n{name} := {{\n{lines}}}\n")
    };
    text.push_str(&rule("all", &all));
    text.push_str(&rule("other", &any_kind));
    let mut entries = EntryRules {
        by_kind: HashMap::new(),
        other: format!("{VERDICTS_PACKAGE}.other"),
        keys: (0..policies.len())
            .map(|i| regorus::Value::from(i.to_string()))
            .collect(),
    };
    for (n, (key, mut members)) in by_kind.into_iter().enumerate() {
        members.extend(&any_kind);
        members.sort_unstable();
        members.dedup();
        text.push_str(&rule(&format!("k{n}"), &members));
        let (group, kind) = key;
        entries
            .by_kind
            .entry(group)
            .or_default()
            .insert(kind, format!("{VERDICTS_PACKAGE}.k{n}"));
    }
    (text, entries)
}

/// Analyse and schedule every module, so that clones of the engine start ready.
fn warm(engine: &mut Engine) -> anyhow::Result<()> {
    engine.set_input(regorus::Value::from(
        json!({"review": {}, "parameters": {}}),
    ));
    engine.eval_query("true".into(), false).map(|_| ())
}

/// Time limit of the load-time probe of each policy against an empty review.
const PROBE_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

fn set_timer(engine: &mut Engine, config: &PolicyConfig) {
    engine.set_execution_timer_config(timer(config));
}

fn timer(config: &PolicyConfig) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit: config.evaluation_timeout(),
        check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
    }
}

fn issue(file: &str, message: String) -> LoadIssue {
    LoadIssue {
        file: file.to_owned(),
        line: None,
        message,
    }
}

fn stem(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.strip_suffix(".rego").unwrap_or(base).replace('_', "-")
}

/// Point a policy's `input.parameters` straight at its own parameters in `data`.
///
/// Gatekeeper's contract gives each policy its own `input.parameters`. Evaluating all policies in
/// one query with `with input.parameters as …` per policy is correct but slow (each `with`
/// discards regorus's rule cache), so when every use of `input` in the module is a plain
/// `input.review…` or `input.parameters…` reference, the latter is rewritten to `data_ref` (same
/// line, so error locations stay true). Any other use of `input` (bound whole, indexed,
/// mentioned in a comment or string) keeps the module as written, evaluated with `with`.
/// Helper libraries (`package lib…`) are never rewritten.
pub(in crate::policy) fn direct_parameters(text: &str, data_ref: &str) -> Option<String> {
    let is_library = text.lines().any(|l| {
        let l = l.trim_start();
        l == "package lib" || l.starts_with("package lib.") || l.starts_with("package lib ")
    });
    if is_library {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    while let Some(at) = rest.find("input") {
        let (before, after) = rest.split_at(at);
        let preceded = before
            .chars()
            .next_back()
            .is_some_and(|c| ident(c) || c == '.');
        let tail = &after["input".len()..];
        if preceded || tail.chars().next().is_some_and(ident) {
            out.push_str(before);
            out.push_str("input");
            rest = tail;
            continue;
        }
        out.push_str(before);
        if let Some(params) = tail.strip_prefix(".parameters") {
            if params.chars().next().is_some_and(ident) {
                return None;
            }
            out.push_str(data_ref);
            rest = params;
        } else if tail.starts_with(".review") {
            out.push_str("input");
            rest = tail;
        } else {
            return None;
        }
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::direct_parameters;
    use super::{MAX_RUN_LISTS, PolicyConfig, PolicySet, RunLists, SourceFile};

    #[test]
    fn run_lists_are_kept_by_the_policies_they_name_and_bounded() {
        let lists = RunLists::default();
        let built = std::cell::Cell::new(0);
        let get = |policies: &[usize]| {
            lists.get(policies, || {
                built.set(built.get() + 1);
                super::super::eval::run_list(
                    policies.iter().map(|i| regorus::Value::from(i.to_string())),
                )
            })
        };
        let json = |text: &str| regorus::Value::from_json_str(text).unwrap();
        let first = get(&[0, 2]);
        assert_eq!(first, json(r#"{"0":true,"2":true}"#));
        assert_eq!(get(&[0, 2]), first);
        assert_eq!(built.get(), 1, "the second request's list is the kept one");
        // Another set of policies is never answered with a kept list.
        assert_eq!(get(&[0]), json(r#"{"0":true}"#));
        assert_eq!(get(&[0, 2, 3]), json(r#"{"0":true,"2":true,"3":true}"#));
        assert_eq!(built.get(), 3);
        for i in 0..2 * MAX_RUN_LISTS {
            get(&[100 + i]);
        }
        let kept = lists.0.lock().unwrap().len();
        assert!((1..=MAX_RUN_LISTS).contains(&kept), "{kept} kept");
    }

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile::new(path, text)
    }

    #[test]
    fn a_large_set_builds_its_verdicts_module_and_judges_each_policy() {
        let mut files = Vec::new();
        for i in 0..300 {
            files.push(file(
                &format!("p{i:03}.rego"),
                &format!("package generated.p{i:03}\nimport rego.v1\nviolation contains {{\"msg\": input.parameters.m}} if input.review.object.metadata.name == \"bad\"\n"),
            ));
            files.push(file(
                &format!("p{i:03}.yaml"),
                &format!("kinds: [{{group: \"\", kind: ConfigMap}}]\nparameters: {{m: m{i}}}\n"),
            ));
        }
        let set = PolicySet::compile(&files, "t".into(), &PolicyConfig::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let req = crate::admission::AdmissionRequest::from_value(serde_json::json!({
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "operation": "CREATE", "namespace": "n", "userInfo": {},
            "object": {"metadata": {"name": "bad"}},
        }))
        .unwrap();
        let hits = set.evaluate(&req, None);
        assert_eq!(hits.len(), 300);
        assert_eq!(hits[7].message, "m7");
        assert_eq!(hits[299].message, "m299");
    }

    /// A request is judged through the entry rule of its kind: only the policies that can
    /// match it (by exact kind or a wildcard) are listed there, and every one of those still
    /// reports; a kind no policy names gets the wildcard policies alone.
    #[test]
    fn entry_rules_list_only_the_policies_of_the_request_kind() {
        let mut files = Vec::new();
        let policy = |name: &str, kinds: &str, files: &mut Vec<SourceFile>| {
            files.push(file(
                &format!("{name}.rego"),
                &format!("package generated.{name}\nimport rego.v1\nviolation contains {{\"msg\": \"{name}\"}} if input.review.object.metadata.name == \"bad\"\n"),
            ));
            files.push(file(&format!("{name}.yaml"), &format!("kinds: {kinds}\n")));
        };
        policy("pods", "[{group: \"\", kind: Pod}]", &mut files);
        policy(
            "maps",
            "[{group: \"\", kind: ConfigMap}, {group: \"\", kind: Pod}]",
            &mut files,
        );
        policy("any", "[{group: \"*\", kind: \"*\"}]", &mut files);
        policy("anyapps", "[{group: apps, kind: \"*\"}]", &mut files);
        let set = PolicySet::compile(&files, "t".into(), &PolicyConfig::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let fired = |group: &str, kind: &str| {
            let req = crate::admission::AdmissionRequest::from_value(serde_json::json!({
                "uid": "u", "kind": {"group": group, "version": "v1", "kind": kind},
                "resource": {"group": group, "version": "v1", "resource": "x"},
                "operation": "CREATE", "namespace": "n", "userInfo": {},
                "object": {"metadata": {"name": "bad"}},
            }))
            .unwrap();
            let mut names: Vec<String> = set
                .evaluate(&req, None)
                .into_iter()
                .map(|h| h.message)
                .collect();
            names.sort();
            names
        };
        assert_eq!(fired("", "Pod"), ["any", "maps", "pods"]);
        assert_eq!(fired("", "ConfigMap"), ["any", "maps"]);
        assert_eq!(fired("", "Secret"), ["any"]);
        assert_eq!(fired("apps", "Deployment"), ["any", "anyapps"]);
        assert_ne!(
            set.entries.rule_for("", "Pod"),
            set.entries.rule_for("", "Secret")
        );
    }

    #[test]
    fn the_verdicts_package_is_reserved() {
        let files = [
            file(
                "p.rego",
                "package __sandbox_admission_verdicts\nimport rego.v1\nviolation contains {\"msg\": \"x\"} if true\n",
            ),
            file("p.yaml", "kinds: [{group: \"\", kind: Pod}]\n"),
        ];
        let err = PolicySet::compile(&files, "t".into(), &PolicyConfig::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("reserved"), "{err}");
    }

    #[test]
    fn parameters_are_rewritten_only_when_every_input_use_is_plain() {
        let d = "data.p.f0";
        assert_eq!(
            direct_parameters("x := input.parameters.a\ny := input.review.object", d).as_deref(),
            Some("x := data.p.f0.a\ny := input.review.object")
        );
        assert_eq!(direct_parameters("x := input", d), None);
        assert_eq!(direct_parameters("x := input[\"parameters\"]", d), None);
        assert_eq!(direct_parameters("x := input.parametersX", d), None);
        assert_eq!(direct_parameters("# reads input\nx := 1", d), None);
        assert_eq!(
            direct_parameters("package lib.x\ny := input.parameters", d),
            None
        );
        assert_eq!(
            direct_parameters("myinput := 1\nx := a.input", d).as_deref(),
            Some("myinput := 1\nx := a.input")
        );
    }
}
