//! Embedded Rego: policies evaluated in-process with regorus, loaded from a file or a folder and
//! reloaded when the files change. A policy that fails to load leaves the previous one in use;
//! the failure is logged and reported by [`DecisionSource::status`].
//!
//! With `engine = "vm"` each configured entry rule is compiled to bytecode for regorus's Rego VM,
//! which evaluates the example policies 3-20x faster than the tree-walking interpreter. A rule
//! the VM compiler cannot take yet (it does not support `with`) is evaluated by the interpreter;
//! the log says which. The interpreter is the default (see [`RegoEngine`]).
//!
//! VMs and interpreter engines need `&mut` to evaluate, so evaluations take one from a small
//! pool (made from the prepared template when the pool is empty) and put it back afterwards.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::{Program, RegoVM};
use regorus::utils::limits::ExecutionTimerConfig;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::{EmbeddedConfig, RegoEngine};
use super::source::{DecisionSource, SourceStatus};
use crate::PolicyError;

/// Engines kept for reuse; more concurrent evaluations clone the template.
const POOL_SIZE: usize = 16;

/// One file's identity for change detection.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// The VM's instruction limit per evaluation; the evaluation timer is the real bound.
const VM_MAX_INSTRUCTIONS: usize = 50_000_000;

/// One entry rule compiled for the Rego VM.
struct VmRule {
    program: Arc<Program>,
    policy: regorus::CompiledPolicy,
    data: regorus::Value,
    timer: ExecutionTimerConfig,
    pool: Mutex<Vec<RegoVM>>,
}

impl VmRule {
    fn vm(&self) -> Result<RegoVM, String> {
        if let Some(vm) = self.pool.lock().pop() {
            return Ok(vm);
        }
        let mut vm = RegoVM::new_with_policy(self.policy.clone());
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone()).map_err(|e| e.to_string())?;
        vm.set_max_instructions(VM_MAX_INSTRUCTIONS);
        vm.set_execution_timer_config(Some(self.timer));
        Ok(vm)
    }

    fn evaluate(&self, input: regorus::Value) -> Result<regorus::Value, String> {
        let mut vm = self.vm()?;
        vm.set_input(input);
        let result = vm.execute().map_err(|e| e.to_string());
        let mut pool = self.pool.lock();
        if pool.len() < POOL_SIZE {
            pool.push(vm);
        }
        result
    }
}

/// A loaded, prepared policy.
struct Loaded {
    template: regorus::Engine,
    pool: Mutex<Vec<regorus::Engine>>,
    /// Entry rules that run on the VM; the others run in the interpreter.
    vm: HashMap<String, VmRule>,
    /// SHA-256 of the files (names and contents), shortened: the policy version.
    version: String,
    fingerprint: Fingerprint,
}

/// Rego policies evaluated in-process.
pub struct EmbeddedRego {
    config: EmbeddedConfig,
    /// Rule paths that must exist in every version loaded (the configured entry points).
    rules: Vec<String>,
    current: RwLock<Arc<Loaded>>,
    /// When the files were last looked at, and the fingerprint of a version that failed to load
    /// (so it is not retried until the files change again).
    checked: Mutex<(Instant, Option<Fingerprint>)>,
    last_error: RwLock<Option<String>>,
}

impl std::fmt::Debug for EmbeddedRego {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedRego").field("path", &self.config.path).finish_non_exhaustive()
    }
}

impl EmbeddedRego {
    /// Loads the policy at `config.path` and checks that every rule in `rules` exists. At start
    /// a policy that does not load is an error (there is no previous one to keep).
    pub fn load(config: EmbeddedConfig, rules: Vec<String>) -> Result<Self, PolicyError> {
        let fingerprint = fingerprint(&config.path).map_err(PolicyError::Unavailable)?;
        let loaded = build(&config, &rules, fingerprint).map_err(PolicyError::Unavailable)?;
        tracing::info!(path = %config.path.display(), version = %loaded.version, "loaded Rego policy");
        Ok(EmbeddedRego {
            config,
            rules,
            current: RwLock::new(Arc::new(loaded)),
            checked: Mutex::new((Instant::now(), None)),
            last_error: RwLock::new(None),
        })
    }

    /// Reloads if the files changed and the last check is older than `reload_check_ms`.
    fn maybe_reload(&self) {
        let every = Duration::from_millis(self.config.reload_check_ms);
        let failed = {
            let mut checked = self.checked.lock();
            if checked.0.elapsed() < every {
                return;
            }
            checked.0 = Instant::now();
            checked.1.clone()
        };
        let fp = match fingerprint(&self.config.path) {
            Ok(fp) => fp,
            Err(e) => return self.failed(e, None),
        };
        if fp == self.current.read().fingerprint || failed.as_ref() == Some(&fp) {
            return;
        }
        match build(&self.config, &self.rules, fp.clone()) {
            Ok(loaded) => {
                tracing::info!(path = %self.config.path.display(), version = %loaded.version, "reloaded Rego policy");
                *self.current.write() = Arc::new(loaded);
                *self.last_error.write() = None;
                self.checked.lock().1 = None;
            }
            Err(e) => self.failed(e, Some(fp)),
        }
    }

    fn failed(&self, error: String, fp: Option<Fingerprint>) {
        let version = self.current.read().version.clone();
        tracing::error!(path = %self.config.path.display(), error = %error, kept_version = %version,
            "Rego policy failed to load; keeping the previous version");
        *self.last_error.write() = Some(error);
        self.checked.lock().1 = fp;
    }
}

#[async_trait]
impl DecisionSource for EmbeddedRego {
    async fn evaluate(&self, path: &str, document: &Value) -> Result<Option<Value>, PolicyError> {
        self.maybe_reload();
        let loaded = self.current.read().clone();
        let input = regorus::Value::from(document.get("input").cloned().unwrap_or(Value::Null));
        let result = match loaded.vm.get(path) {
            Some(rule) => rule.evaluate(input),
            None => loaded.interpret(path, input),
        };
        let value = result.map_err(|e| {
            PolicyError::Unavailable(format!("Rego policy {} failed evaluating {path}: {e}", loaded.version))
        })?;
        if value == regorus::Value::Undefined {
            return Ok(None);
        }
        serde_json::to_value(&value)
            .map(Some)
            .map_err(|e| PolicyError::Unavailable(format!("Rego result of {path} is not JSON: {e}")))
    }

    fn version(&self) -> String {
        self.current.read().version.clone()
    }

    fn backend(&self) -> &'static str {
        "opa-embedded"
    }

    fn status(&self) -> SourceStatus {
        SourceStatus { backend: self.backend(), version: self.version(), last_error: self.last_error.read().clone() }
    }
}

impl Loaded {
    fn interpret(&self, path: &str, input: regorus::Value) -> Result<regorus::Value, String> {
        let mut engine = self.pool.lock().pop().unwrap_or_else(|| self.template.clone());
        engine.set_input(input);
        let result = engine.eval_rule(path.to_owned()).map_err(|e| e.to_string());
        let mut pool = self.pool.lock();
        if pool.len() < POOL_SIZE {
            pool.push(engine);
        }
        result
    }
}

impl EmbeddedRego {
    /// The entry rules evaluated by the Rego VM (the others by the interpreter), sorted.
    pub fn vm_rules(&self) -> Vec<String> {
        let mut rules: Vec<String> = self.current.read().vm.keys().cloned().collect();
        rules.sort();
        rules
    }
}

/// Compiles `rule` for the Rego VM.
fn compile_for_vm(engine: &regorus::Engine, rule: &str, timer: ExecutionTimerConfig) -> Result<VmRule, String> {
    let mut engine = engine.clone();
    let policy = engine.compile_with_entrypoint(&regorus::Rc::from(rule)).map_err(|e| e.to_string())?;
    let program = Compiler::compile_from_policy(&policy, &[rule]).map_err(|e| e.to_string())?;
    Ok(VmRule { program, policy, data: engine.get_data(), timer, pool: Mutex::new(Vec::new()) })
}

/// The policy files under `path`: the file itself, or `*.rego` and `data.json` found
/// recursively in the folder (hidden entries skipped), sorted.
fn policy_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("policy path {}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("policy folder {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("policy folder {}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else if name.ends_with(".rego") || name == "data.json" {
                files.push(p);
            }
        }
    }
    files.sort();
    if !files.iter().any(|f| f.extension().is_some_and(|e| e == "rego")) {
        return Err(format!("policy folder {} holds no .rego file", path.display()));
    }
    Ok(files)
}

fn fingerprint(path: &Path) -> Result<Fingerprint, String> {
    policy_files(path)?
        .into_iter()
        .map(|f| {
            let m = std::fs::metadata(&f).map_err(|e| format!("policy file {}: {e}", f.display()))?;
            Ok((f, m.modified().ok(), m.len()))
        })
        .collect()
}

/// Reads, parses and prepares the policy; checks that every entry rule exists.
fn build(config: &EmbeddedConfig, rules: &[String], fingerprint: Fingerprint) -> Result<Loaded, String> {
    let mut engine = regorus::Engine::new();
    let timer = ExecutionTimerConfig {
        limit: Duration::from_millis(config.eval_timeout_ms),
        // The clock is read every 64 evaluation steps, not every step (a measurable share of
        // a decision); a runaway policy still stops within microseconds of the limit.
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    };
    engine.set_execution_timer_config(timer);
    let mut hash = Sha256::new();
    for (file, _, _) in &fingerprint {
        let text = std::fs::read_to_string(file).map_err(|e| format!("policy file {}: {e}", file.display()))?;
        hash.update(file.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
        hash.update([0]);
        if file.extension().is_some_and(|e| e == "rego") {
            engine
                .add_policy(file.to_string_lossy().into_owned(), text)
                .map_err(|e| format!("policy file {}: {e}", file.display()))?;
        } else {
            let data =
                regorus::Value::from_json_str(&text).map_err(|e| format!("data file {}: {e}", file.display()))?;
            engine.add_data(data).map_err(|e| format!("data file {}: {e}", file.display()))?;
        }
    }
    // Evaluating prepares the engine (some errors only show here) and proves each rule exists.
    engine.set_input(regorus::Value::new_object());
    for rule in rules {
        engine
            .eval_rule(rule.clone())
            .map_err(|e| format!("policy {}: entry rule {rule}: {e}", config.path.display()))?;
    }
    let digest = hash.finalize();
    let version: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let mut vm = HashMap::new();
    if config.engine == RegoEngine::Vm {
        for rule in rules {
            match compile_for_vm(&engine, rule, timer) {
                Ok(compiled) => {
                    vm.insert(rule.clone(), compiled);
                }
                Err(e) => tracing::info!(rule = %rule, reason = %e.lines().last().unwrap_or(&e),
                    "Rego rule runs in the interpreter (the VM compiler does not take it)"),
            }
        }
    }
    Ok(Loaded { template: engine, pool: Mutex::new(Vec::new()), vm, version, fingerprint })
}
