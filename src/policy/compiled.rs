//! The compiled evaluator: the whole policy set as one RVM program, compiled at load (and on
//! reload, which runs off the request path), and a VM per request.
//!
//! The interpreter walks the AST and keeps its rule cache in a clone of the engine; the RVM runs
//! bytecode with registers, so the same verdicts cost a fraction of the instructions (figures in
//! docs/performance.md). Compilation is all or nothing: a set the RVM cannot run (a `with`, or
//! anything else its compiler refuses, or a probe that fails on the VM but not on the
//! interpreter) is served by the interpreter as a whole, and the reason is logged, counted in
//! `sandbox_admission_policy_evaluator` and shown in `/readyz`. A set is never half-compiled.

use std::sync::{Arc, Mutex};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::{Program, RegoVM};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};

/// VMs kept for reuse: a VM's registers and rule cache are allocated once, and its data is set
/// once (the data-conflict check walks `data`). More than this many concurrent evaluations
/// simply create extra VMs that are dropped afterwards.
const POOL_SIZE: usize = 16;

/// Which evaluator a set runs on, and why when it is not the compiled one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvaluatorKind {
    Compiled,
    /// The interpreter, with the reason the set could not be compiled.
    Interpreter(String),
}

impl EvaluatorKind {
    pub fn name(&self) -> &'static str {
        match self {
            EvaluatorKind::Compiled => "rvm",
            EvaluatorKind::Interpreter(_) => "interpreter",
        }
    }
}

/// One set's program, with the data every VM runs against.
pub(super) struct CompiledSet {
    program: Arc<Program>,
    data: Value,
    timer: ExecutionTimerConfig,
    pool: Mutex<Vec<RegoVM>>,
}

impl CompiledSet {
    /// Compile the set held by `engine` with `entry_points` (full rule paths) as the program's
    /// entry points. `engine` must already be prepared (every module added and analysed).
    pub(super) fn build(
        engine: &Engine,
        entry_points: &[&str],
        timer: ExecutionTimerConfig,
    ) -> Result<CompiledSet, String> {
        let Some(&first) = entry_points.first() else {
            return Err("no entry points".into());
        };
        let mut engine = engine.clone();
        let policy = engine
            .compile_with_entrypoint(&first.into())
            .map_err(|e| format!("{e:#}"))?;
        let program =
            Compiler::compile_from_policy(&policy, entry_points).map_err(|e| format!("{e}"))?;
        Ok(CompiledSet {
            program,
            data: engine.get_data(),
            timer,
            pool: Mutex::new(Vec::new()),
        })
    }

    /// The same program against other data (`data.inventory` changed); no recompilation.
    pub(super) fn with_data(&self, data: Value) -> CompiledSet {
        CompiledSet {
            program: self.program.clone(),
            data,
            timer: self.timer,
            pool: Mutex::new(Vec::new()),
        }
    }

    /// The value of the entry point `entry` for `input`.
    pub(super) fn eval(&self, entry: &str, input: Value) -> anyhow::Result<Value> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let mut vm = match pooled {
            Some(vm) => vm,
            None => self.new_vm()?,
        };
        vm.set_input(input);
        let result = vm.execute_entry_point_by_name(entry);
        // The input (the whole review) is not kept alive by an idle VM.
        vm.set_input(Value::Undefined);
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < POOL_SIZE
        {
            pool.push(vm);
        }
        result.map_err(anyhow::Error::from)
    }

    fn new_vm(&self) -> anyhow::Result<RegoVM> {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone())?;
        // The time limit is the bound, as on the interpreter; the instruction limit would cut a
        // large set short at a count that has nothing to do with the configured timeout.
        vm.set_max_instructions(usize::MAX);
        // As the interpreter (regorus's default): a builtin error fails the evaluation, which
        // fails closed, instead of silently making an expression undefined.
        vm.set_strict_builtin_errors(true);
        vm.set_execution_timer_config(Some(self.timer));
        Ok(vm)
    }
}
