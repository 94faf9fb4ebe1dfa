//! Per-request methods: the server's flags set the default [`MethodSpec`]; a request's
//! `deepguard` extension may turn the guard and steering on or off and change their settings,
//! or give a whole spec (`"method": "guard:g:reference@0.5+steer:vec:auto"`), parsed by the same
//! code as `--method`. A request never points at other files: it chooses among what the server
//! was started with. The method itself is `deepguard_methods::guided::Guided`.

use crate::api::{ApiError, DeepguardOptions};
use crate::engine::{Prepare, Prepared};
use anyhow::Result;
use deepguard_methods::guard::Guard;
use deepguard_methods::guided::Guided;
use deepguard_eval::repair::Checks;
use deepguard_methods::spec::{GuardSpec, MethodSpec, PromptSpec, RepairSpec, SteerSpec};
use deepguard_methods::steer::{self, Selector};
use deepguard_runtime::hooks::LogitsProcessor;
use deepguard_runtime::Model;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// A request's repair loop runs at most this many rounds (each is a generation and a check).
pub const MAX_REPAIR_ROUNDS: usize = 4;

/// What the server can apply, and its defaults.
pub struct Methods {
    /// The server's guard, loaded once (its adapters are attached to the shared model; requests
    /// without the guard run their rows with the adapters switched off).
    guard: Option<Arc<Guard>>,
    /// The method a request without a `deepguard` field gets.
    default: MethodSpec,
    /// The static tools and build check of the repair loop, or why the server has none.
    checks: Result<Arc<Checks>, String>,
}

impl Methods {
    /// Loads the default spec's guard (and attaches its adapters to `model`) and checks its
    /// steering vectors, so that a bad flag fails at start-up rather than on the first request.
    pub fn load(model: &mut Model, default: MethodSpec) -> Result<Self> {
        if default.rerank.is_some() {
            anyhow::bail!("method `{default}`: reranks are not served (use them with eval/compare)");
        }
        if matches!(default.prompt, Some(PromptSpec::Cwe { .. })) && default.routing_vectors().is_none() {
            anyhow::bail!("method `{default}`: prompt:cwe routes with steering vectors: give prompt:cwe:DIR or --steer DIR:auto");
        }
        let guard = match &default.guard {
            Some(g) => {
                let loaded = Guard::load(&g.dir, model)?;
                loaded.attach(model)?;
                Some(Arc::new(loaded))
            }
            None => None,
        };
        if let Some(s) = &default.steer {
            steer::load_selected(&s.vectors, &s.select, model)?;
        }
        Ok(Self { guard, default, checks: Err("this server has no static tools (start it with --venv)".into()) })
    }

    /// The repair loop's checks (`Err`: why the server has none). A default method with a repair
    /// needs them: without, this fails (at start-up).
    pub fn with_checks(mut self, checks: Result<Checks, String>) -> Result<Self> {
        if let (Some(_), Err(why)) = (&self.default.repair, &checks) {
            anyhow::bail!("method `{}`: the repair loop needs the static tools: {why}", self.default);
        }
        self.checks = checks.map(Arc::new);
        Ok(self)
    }

    /// The repair loop's checks, when the server has them.
    pub fn checks(&self) -> Option<Arc<Checks>> {
        self.checks.as_ref().ok().cloned()
    }

    pub fn defaults(&self) -> MethodSpec {
        self.default.clone()
    }

    /// The request's method: the defaults, changed by its `deepguard` field.
    pub fn choose(&self, o: Option<&DeepguardOptions>) -> Result<MethodSpec, ApiError> {
        let Some(o) = o else { return Ok(self.defaults()) };
        let bad = |p: &str, m: String| ApiError::bad(m).param(&format!("deepguard.{p}"));
        if let Some(text) = &o.method {
            if o.guard.is_some() || o.guard_strength.is_some() || o.steer.is_some() || o.alpha.is_some() || o.prompt.is_some() || o.repair.is_some() {
                return Err(bad("method", "give either `method` or the guard/steer/prompt/repair fields, not both".into()));
            }
            let spec: MethodSpec = text.parse().map_err(|e: anyhow::Error| bad("method", format!("{e:#}")))?;
            return self.check_request_spec(spec).map_err(|m| bad("method", m));
        }
        let mut c = self.defaults();
        let no_guard = || bad("guard", "this server has no guard (start it with --guard DIR)".into());
        let server_guard = self.default.guard.as_ref();
        match o.guard {
            Some(true) if server_guard.is_none() => return Err(no_guard()),
            Some(false) => c.guard = None,
            _ => {}
        }
        if let Some(s) = o.guard_strength {
            if !s.is_finite() {
                return Err(bad("guard_strength", format!("must be a finite number, got {s}")));
            }
            match (server_guard, o.guard) {
                (None, _) => return Err(bad("guard_strength", "this server has no guard (start it with --guard DIR)".into())),
                (Some(_), Some(false)) => {}
                (Some(g), _) => c.guard = Some(GuardSpec { strength: s, ..g.clone() }),
            }
        }
        let no_steer = |p: &str| bad(p, "this server has no steering vectors (start it with --steer SPEC)".into());
        let server_steer = self.default.steer.as_ref();
        let alpha = o.alpha.or(server_steer.map(|s| s.alpha)).unwrap_or(steer::DEFAULT_ALPHA);
        if !alpha.is_finite() {
            return Err(bad("alpha", format!("must be a finite number, got {alpha}")));
        }
        let with = |select: Option<Selector>| -> Result<SteerSpec, ApiError> {
            let s = server_steer.ok_or_else(|| no_steer("steer"))?;
            Ok(SteerSpec { select: select.unwrap_or_else(|| s.select.clone()), alpha, ..s.clone() })
        };
        match &o.steer {
            None | Some(Value::Null) => {
                if o.alpha.is_some() {
                    server_steer.ok_or_else(|| no_steer("alpha"))?;
                    if c.steer.is_some() {
                        c.steer = Some(with(None)?);
                    }
                }
            }
            Some(Value::Bool(false)) => c.steer = None,
            Some(Value::Bool(true)) => c.steer = Some(with(None)?),
            Some(Value::String(s)) if s == "off" || s == "none" => c.steer = None,
            Some(Value::String(sel)) => {
                let expected = || bad("steer", format!("expected true, false, \"auto\" or a CWE such as \"CWE-89\", got {sel:?}"));
                let select = if sel == "auto" {
                    Selector::Auto
                } else {
                    Selector::Cwe(deepguard_methods::data::Cwe::parse(sel).map_err(|_| expected())?)
                };
                c.steer = Some(with(Some(select))?);
            }
            Some(other) => return Err(bad("steer", format!("expected true, false, \"auto\" or a CWE such as \"CWE-89\", got {}", crate::api::type_name(other)))),
        }
        match &o.prompt {
            None | Some(Value::Null) => {}
            Some(Value::Bool(false)) => c.prompt = None,
            Some(Value::String(p)) if p == "off" || p == "none" => c.prompt = None,
            Some(Value::String(p)) if p == "secure" => c.prompt = Some(PromptSpec::Secure),
            Some(Value::String(p)) if p == "cwe" => c.prompt = Some(PromptSpec::Cwe { vectors: None }),
            Some(other) => return Err(bad("prompt", format!("expected \"secure\", \"cwe\" or false, got {other}"))),
        }
        match &o.repair {
            None | Some(Value::Null) => {}
            Some(Value::Bool(false)) => c.repair = None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(0) => c.repair = None,
                Some(r) if r <= MAX_REPAIR_ROUNDS as u64 => c.repair = Some(RepairSpec { rounds: r as usize, temperature: c.repair.and_then(|s| s.temperature) }),
                _ => return Err(bad("repair", format!("expected a number of rounds from 0 to {MAX_REPAIR_ROUNDS}, got {n}"))),
            },
            Some(other) => return Err(bad("repair", format!("expected a number of rounds or false, got {}", crate::api::type_name(other)))),
        }
        let param = |m: &String| if m.contains("static tools") || m.contains("repair") { "repair" } else if m.contains("prompt") { "prompt" } else { "steer" };
        self.check_request_spec(c).map_err(|m| bad(param(&m), m))
    }

    /// A request's spec may use only the server's guard folder and vector folder (named by
    /// their path as given to the server, or their folder name), and none of what the server
    /// does not apply per request.
    fn check_request_spec(&self, mut spec: MethodSpec) -> Result<MethodSpec, String> {
        let same = |asked: &Path, have: &Path| asked == have || (asked.components().count() == 1 && asked.file_name() == have.file_name());
        if spec.rerank.is_some() {
            return Err("rerank is not available per request (it needs the evaluation's judge)".into());
        }
        if spec.repair.is_some_and(|r| r.rounds > MAX_REPAIR_ROUNDS) {
            return Err(format!("a repair runs at most {MAX_REPAIR_ROUNDS} rounds on this server"));
        }
        if spec.repair.is_some() {
            if let Err(why) = &self.checks {
                return Err(format!("repair needs the static tools: {why}"));
            }
        }
        if let Some(PromptSpec::Cwe { vectors }) = &mut spec.prompt {
            // Routing uses vectors the server was started with: its steering folder, or its
            // default prompt:cwe folder.
            let allowed: Vec<std::path::PathBuf> = self.default.steer.iter().map(|s| s.vectors.clone()).chain(self.default.routing_vectors()).collect();
            match vectors {
                Some(v) => match allowed.iter().find(|a| same(v, a)) {
                    Some(a) => *v = a.clone(),
                    None => return Err(format!("prompt:cwe: {} is not one of this server's vector folders", v.display())),
                },
                None if spec.steer.is_some() => {}
                None => match allowed.first() {
                    Some(a) => *vectors = Some(a.clone()),
                    None => return Err("prompt:cwe routes with steering vectors and this server has none (start it with --steer DIR:auto)".into()),
                },
            }
        }
        if let Some(g) = &mut spec.guard {
            match &self.default.guard {
                Some(have) if same(&g.dir, &have.dir) => g.dir = have.dir.clone(),
                Some(have) => return Err(format!("this server's guard is {}; a request cannot load another", have.dir.display())),
                None => return Err("this server has no guard (start it with --guard DIR)".into()),
            }
        }
        if let Some(s) = &mut spec.steer {
            let have = self.default.steer.as_ref().ok_or("this server has no steering vectors (start it with --steer SPEC)")?;
            if !same(&s.vectors, &have.vectors) {
                return Err(format!("this server's steering vectors are {}; a request cannot load others", have.vectors.display()));
            }
            s.vectors = have.vectors.clone();
            if let Selector::Cwe(cwe) = s.select {
                if s.vectors.is_dir() && !s.vectors.join(steer::file_name(Some(cwe))).exists() {
                    return Err(format!("this server has no steering vector for {cwe}"));
                }
            }
        }
        Ok(spec)
    }

    /// The method's short name, as `deepguard eval` records it (`base`, `guard-g-s1`,
    /// `steer-vecs-auto-a4` for vectors in `vecs/`, both joined by `+`).
    pub fn name(&self, c: &MethodSpec) -> String {
        c.name()
    }

    /// The server's defaults, for `/v1/models` and the start-up line.
    pub fn describe(&self) -> Value {
        let d = &self.default;
        json!({
            "default_method": d.name(),
            "spec": d.to_string(),
            "guard": d.guard.as_ref().map(|g| json!({"dir": g.dir, "bias_rule": format!("{:?}", g.rule).to_lowercase(), "strength": g.strength, "prior": g.prior})),
            "steer": d.steer.as_ref().map(|s| json!({"spec": s.arg(), "alpha": s.alpha, "layer": s.layer})),
            "repair_checks": match &self.checks { Ok(c) => json!(c.judge.name()), Err(why) => json!({"unavailable": why}) },
        })
    }

    /// The engine-side work of a request: steering hooks (probe-then-steer routes the prompt
    /// first), the guard's prompt score and logit bias, and the report sent back.
    pub fn prepare(&self, c: MethodSpec, ignore_eos: bool) -> Prepare {
        let lora = c.guard.is_some();
        let method = match (&self.guard, lora) {
            (Some(g), true) => Guided::with_guard(c, g.clone()),
            _ => Guided::new(c, false),
        };
        Box::new(move |model: &Model, ids: &[u32]| -> Result<Prepared> {
            let applied = method.apply(model, ids)?;
            let mut g = applied.guidance;
            if ignore_eos {
                g.processors.push(Box::new(NoStop(model.tokenizer.stop_ids.iter().copied().collect())));
            }
            Ok(Prepared { guidance: g, lora, report: applied.report })
        })
    }
}

/// Masks the end-of-sequence tokens (`ignore_eos`).
struct NoStop(Vec<u32>);

impl LogitsProcessor for NoStop {
    fn process(&mut self, _: usize, _: usize, logits: &mut [f32]) -> Result<()> {
        for &t in &self.0 {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deepguard_methods::prior::BiasRule;

    /// A server started with `--guard runs/g --steer VECS:auto --alpha 3`, VECS holding a vector
    /// for CWE-89 only (choosing a method needs no loaded guard or model).
    fn server(vecs: &Path) -> Methods {
        std::fs::write(vecs.join("cwe-089.gguf"), b"").unwrap();
        let default: MethodSpec = format!("guard:runs/g+steer:{}:auto@3", vecs.display()).parse().unwrap();
        Methods { guard: None, default, checks: Err("no tools".into()) }
    }

    fn opts(v: Value) -> DeepguardOptions {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_request_changes_the_servers_defaults() {
        let t = tempfile::tempdir().unwrap();
        let m = server(t.path());
        assert_eq!(m.choose(None).unwrap(), m.defaults());
        let c = m.choose(Some(&opts(json!({"guard": false, "steer": "CWE-89", "alpha": 5.0})))).unwrap();
        assert!(c.guard.is_none());
        let s = c.steer.unwrap();
        assert_eq!((s.select, s.alpha, s.vectors.as_path()), (Selector::Cwe(deepguard_methods::data::Cwe(89)), 5.0, t.path()));
        let c = m.choose(Some(&opts(json!({"guard_strength": 0.5, "steer": false})))).unwrap();
        assert_eq!((c.guard.as_ref().unwrap().strength, c.steer.is_none()), (0.5, true));
        assert_eq!(m.name(&c), "guard-g-s0.5");
    }

    #[test]
    fn a_request_spec_is_parsed_like_the_command_line_and_stays_on_the_servers_files() {
        let t = tempfile::tempdir().unwrap();
        let m = server(t.path());
        let folder = t.path().file_name().unwrap().to_string_lossy().to_string();
        // Every knob of the guard is reachable; folders are named by path or by folder name.
        let c = m.choose(Some(&opts(json!({"method": format!("guard:g:reference:no-prior@0.25+steer:{folder}:cwe-089")})))).unwrap();
        let g = c.guard.as_ref().unwrap();
        assert_eq!((g.dir.as_path(), g.rule, g.prior, g.strength), (Path::new("runs/g"), BiasRule::Reference, false, 0.25));
        assert_eq!(c.steer.as_ref().unwrap().vectors, t.path());
        assert_eq!(m.choose(Some(&opts(json!({"method": "base"})))).unwrap(), MethodSpec::base());
        for (req, says) in [
            (json!({"method": "guard:/etc/other"}), "a request cannot load another"),
            (json!({"method": "steer:/tmp/x:auto"}), "a request cannot load others"),
            (json!({"method": format!("steer:{folder}:CWE-79")}), "no steering vector for CWE-79"),
            (json!({"method": "rerank:4"}), "rerank is not available per request"),
            (json!({"method": "repair:2"}), "repair needs the static tools: no tools"),
            (json!({"repair": 1}), "repair needs the static tools"),
            (json!({"prompt": "loud"}), "expected \"secure\", \"cwe\" or false"),
            (json!({"method": "prompt:cwe:/tmp/other"}), "not one of this server's vector folders"),
            (json!({"method": "guard:g@x"}), "`x` after `@` is not a number"),
            (json!({"method": "base", "guard": true}), "either `method` or the guard/steer/prompt/repair fields"),
            (json!({"steer": "CWE-79"}), "no steering vector for CWE-79"),
            (json!({"steer": 3}), "expected true, false"),
        ] {
            let e = m.choose(Some(&opts(req.clone()))).unwrap_err();
            assert!(e.message.contains(says), "{req}: {}", e.message);
            assert!(e.param.as_deref().is_some_and(|p| p.starts_with("deepguard.")), "{req}: {:?}", e.param);
        }
    }

    #[test]
    fn a_server_without_a_guard_or_vectors_refuses_to_turn_them_on() {
        let m = Methods { guard: None, default: MethodSpec::base(), checks: Err("no tools".into()) };
        for (req, param) in [(json!({"guard": true}), "deepguard.guard"), (json!({"guard_strength": 2.0}), "deepguard.guard_strength"), (json!({"steer": true}), "deepguard.steer"), (json!({"alpha": 2.0}), "deepguard.alpha")] {
            let e = m.choose(Some(&opts(req.clone()))).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{req}: {}", e.message);
        }
    }

    #[test]
    fn prompt_variants_and_repairs_are_chosen_per_request_when_the_server_has_what_they_need() {
        let t = tempfile::tempdir().unwrap();
        let mut m = server(t.path());
        let judge = deepguard_eval::rerank::scorer(deepguard_eval::judge::Judge::default_for(Path::new("/nonexistent/bin"), Path::new("/nonexistent/rules"), None));
        m.checks = Ok(Arc::new(Checks { judge, venv_bin: "/nonexistent/bin".into() }));
        let c = m.choose(Some(&opts(json!({"method": "prompt:secure+repair:2:t=0.5"})))).unwrap();
        assert_eq!((c.prompt, c.repair), (Some(PromptSpec::Secure), Some(RepairSpec { rounds: 2, temperature: Some(0.5) })));
        assert!(c.guard.is_none() && c.steer.is_none(), "a whole spec replaces the defaults");
        // The fields keep the server's guard and steering, and add a prompt variant and a repair.
        let c = m.choose(Some(&opts(json!({"prompt": "cwe", "repair": 1})))).unwrap();
        assert!(c.guard.is_some() && c.steer.is_some());
        assert_eq!((c.prompt, c.repair.map(|r| r.rounds)), (Some(PromptSpec::Cwe { vectors: None }), Some(1)));
        // prompt:cwe without steering routes with the server's vector folder.
        let c = m.choose(Some(&opts(json!({"prompt": "cwe", "steer": false})))).unwrap();
        assert!(c.steer.is_none());
        assert_eq!(c.routing_vectors().as_deref(), Some(t.path()));
        for (req, param) in [(json!({"repair": 9}), "deepguard.repair"), (json!({"repair": "x"}), "deepguard.repair"), (json!({"method": "repair:9"}), "deepguard.method")] {
            let e = m.choose(Some(&opts(req.clone()))).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{req}: {}", e.message);
        }
        let plain = Methods { guard: None, default: MethodSpec::base(), checks: Err("no tools".into()) };
        assert!(plain.choose(Some(&opts(json!({"prompt": "cwe"})))).unwrap_err().message.contains("this server has none"));
        // A default repair without tools fails at start-up.
        let rep = Methods { guard: None, default: "repair:1".parse().unwrap(), checks: Err("x".into()) };
        assert!(rep.with_checks(Err("no venv".into())).err().unwrap().to_string().contains("needs the static tools: no venv"));
    }
}
