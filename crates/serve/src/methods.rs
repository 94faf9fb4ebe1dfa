//! Per-request methods: the server's flags set the defaults, a request's `deepguard` extension
//! may turn the guard and steering on or off and change their strengths (never point at other
//! files: a request chooses among what the server was started with).

use crate::api::{ApiError, DeepguardOptions};
use crate::engine::{Prepare, Prepared};
use anyhow::Result;
use deepguard_methods::guard::Guard;
use deepguard_methods::guided::Guided;
use deepguard_methods::prior::BiasRule;
use deepguard_methods::steer::{self, Selector};
use deepguard_runtime::generate::{Guidance, Method};
use deepguard_runtime::hooks::LogitsProcessor;
use deepguard_runtime::Model;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// The server's guard, loaded once (its adapters are attached to the shared model; requests
/// without the guard run their rows with the adapters switched off).
pub struct ServerGuard {
    pub dir: PathBuf,
    pub guard: Arc<Guard>,
    pub rule: BiasRule,
    pub strength: f32,
}

/// What the server can apply, and its defaults.
pub struct Methods {
    pub guard: Option<ServerGuard>,
    /// `--steer` spec and `--alpha`.
    pub steer: Option<(String, f64)>,
}

/// One request's method.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Guard strength, if the guard applies.
    pub guard: Option<f32>,
    /// Steering spec (`PATH`, `PATH:CWE` or `PATH:auto`) and alpha, if steering applies.
    pub steer: Option<(String, f64)>,
}

impl Methods {
    /// Loads the guard (and attaches its adapters to `model`) and checks the steering vectors,
    /// so that a bad flag fails at start-up rather than on the first request.
    pub fn load(model: &mut Model, guard: Option<(PathBuf, BiasRule, f32)>, steer: Option<(String, f64)>) -> Result<Self> {
        let guard = match guard {
            Some((dir, rule, strength)) => {
                let g = Guard::load(&dir, model)?;
                g.attach(model)?;
                Some(ServerGuard { dir, guard: Arc::new(g), rule, strength })
            }
            None => None,
        };
        if let Some((spec, _)) = &steer {
            let (path, sel) = steer::parse_steer_arg(spec)?;
            steer::load_selected(&path, &sel, model)?;
        }
        Ok(Self { guard, steer })
    }

    pub fn defaults(&self) -> Choice {
        Choice { guard: self.guard.as_ref().map(|g| g.strength), steer: self.steer.clone() }
    }

    /// The request's method: the defaults, changed by its `deepguard` field.
    pub fn choose(&self, o: Option<&DeepguardOptions>) -> Result<Choice, ApiError> {
        let mut c = self.defaults();
        let Some(o) = o else { return Ok(c) };
        let bad = |p: &str, m: String| ApiError::bad(m).param(&format!("deepguard.{p}"));
        match o.guard {
            Some(true) if self.guard.is_none() => return Err(bad("guard", "this server has no guard (start it with --guard DIR)".into())),
            Some(false) => c.guard = None,
            _ => {}
        }
        if let Some(s) = o.guard_strength {
            if !s.is_finite() {
                return Err(bad("guard_strength", format!("must be a finite number, got {s}")));
            }
            match (&self.guard, o.guard) {
                (None, _) => return Err(bad("guard_strength", "this server has no guard (start it with --guard DIR)".into())),
                (Some(_), Some(false)) => {}
                (Some(_), _) => c.guard = Some(s),
            }
        }
        let server_path = || -> Result<PathBuf, ApiError> {
            let (spec, _) = self.steer.as_ref().ok_or_else(|| bad("steer", "this server has no steering vectors (start it with --steer SPEC)".into()))?;
            Ok(steer::parse_steer_arg(spec).map_err(|e| bad("steer", format!("{e:#}")))?.0)
        };
        let alpha = o.alpha.or(self.steer.as_ref().map(|s| s.1)).unwrap_or(steer::DEFAULT_ALPHA);
        if !alpha.is_finite() {
            return Err(bad("alpha", format!("must be a finite number, got {alpha}")));
        }
        match &o.steer {
            None | Some(Value::Null) => {
                if o.alpha.is_some() {
                    let (spec, _) = self.steer.as_ref().ok_or_else(|| bad("alpha", "this server has no steering vectors (start it with --steer SPEC)".into()))?;
                    if c.steer.is_some() {
                        c.steer = Some((spec.clone(), alpha));
                    }
                }
            }
            Some(Value::Bool(false)) => c.steer = None,
            Some(Value::Bool(true)) => {
                let (spec, _) = self.steer.as_ref().ok_or_else(|| bad("steer", "this server has no steering vectors (start it with --steer SPEC)".into()))?;
                c.steer = Some((spec.clone(), alpha));
            }
            Some(Value::String(s)) if s == "off" || s == "none" => c.steer = None,
            Some(Value::String(sel)) => {
                let path = server_path()?;
                let spec = format!("{}:{sel}", path.display());
                match steer::parse_steer_arg(&spec) {
                    Ok((_, Selector::Cwe(cwe))) if path.is_dir() && !path.join(steer::file_name(Some(cwe))).exists() => {
                        return Err(bad("steer", format!("this server has no steering vector for {cwe}")));
                    }
                    Ok((_, Selector::Auto | Selector::Cwe(_))) => c.steer = Some((spec, alpha)),
                    _ => return Err(bad("steer", format!("expected true, false, \"auto\" or a CWE such as \"CWE-89\", got {sel:?}"))),
                }
            }
            Some(other) => return Err(bad("steer", format!("expected true, false, \"auto\" or a CWE such as \"CWE-89\", got {}", crate::api::type_name(other)))),
        }
        Ok(c)
    }

    /// The method's short name, as `deepguard eval` records it (`base`, `guard-g-s1`,
    /// `steer-vecs-auto-a4` for vectors in `vecs/`, both joined by `+`).
    pub fn name(&self, c: &Choice) -> String {
        let guard = match (&self.guard, c.guard) {
            (Some(g), Some(s)) => Some((g.dir.clone(), g.rule, s)),
            _ => None,
        };
        Guided::new(c.steer.clone(), guard, false).name()
    }

    /// The server's defaults, for `/v1/models` and the start-up line.
    pub fn describe(&self) -> Value {
        let d = self.defaults();
        json!({
            "default_method": self.name(&d),
            "guard": self.guard.as_ref().map(|g| json!({"dir": g.dir, "bias_rule": format!("{:?}", g.rule).to_lowercase(), "strength": g.strength})),
            "steer": self.steer.as_ref().map(|(s, a)| json!({"spec": s, "alpha": a})),
        })
    }

    /// The engine-side work of a request: steering hooks (probe-then-steer routes the prompt
    /// first), the guard's prompt score and logit bias, and the report sent back.
    pub fn prepare(&self, c: Choice, ignore_eos: bool) -> Prepare {
        let name = self.name(&c);
        let guard = match (&self.guard, c.guard) {
            (Some(g), Some(s)) => Some((g.guard.clone(), g.rule, s)),
            _ => None,
        };
        let steer = c.steer;
        Box::new(move |model: &Model, ids: &[u32]| -> Result<Prepared> {
            let mut g: Guidance<'static> = Guidance::default();
            let mut report = json!({"method": name, "guard": null, "steer": null});
            if let Some((spec, alpha)) = &steer {
                let (hooks, note) = steer::hooks_for(model, spec, *alpha, ids)?;
                let sel = match steer::parse_steer_arg(spec) {
                    Ok((_, Selector::Auto | Selector::Cwe(_))) => spec.rsplit_once(':').map_or("file", |(_, s)| s),
                    _ => "file",
                };
                report["steer"] = json!({"selector": sel, "alpha": alpha, "applied": !hooks.is_empty(), "note": note});
                for h in hooks {
                    g.hooks.push(Box::new(h));
                }
            }
            let lora = guard.is_some();
            if let Some((guard, rule, strength)) = &guard {
                let (bias, score) = guard.guidance(model, ids, *rule, *strength)?;
                report["guard"] = json!({"strength": strength, "bias_rule": format!("{rule:?}").to_lowercase(), "prompt_score": score});
                g.processors.push(Box::new(bias));
            }
            if ignore_eos {
                g.processors.push(Box::new(NoStop(model.tokenizer.stop_ids.iter().copied().collect())));
            }
            Ok(Prepared { guidance: g, lora, report })
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
