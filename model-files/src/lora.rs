//! PEFT LoRA adapter folders: `adapter_config.json` and `adapter_model.safetensors`, as
//! `PeftModel.save_pretrained` writes them and `PeftModel.from_pretrained` reads them.
//!
//! Tensor names in the file carry PEFT's `base_model.model.` prefix
//! (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`); in memory they are named
//! as [`crate::params::Params::map`] names them, without it.

use crate::checkpoint::HostTensor;
use crate::params::MAGNITUDE;
use crate::safetensors::{read_safetensors, write_safetensors};
use anyhow::{bail, Context, Result};
use schemas::train::{Lora, LoraTarget};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const PREFIX: &str = "base_model.model.";

/// Writes `tensors` (adapter tensors by in-memory name) and their settings as a PEFT adapter
/// folder; `base_model` is recorded as `base_model_name_or_path`.
pub fn write_adapter(dir: &Path, lora: &Lora, tensors: &BTreeMap<String, HostTensor>, base_model: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let prefixed: BTreeMap<String, HostTensor> = tensors.iter().map(|(k, v)| (format!("{PREFIX}{k}"), v.clone())).collect();
    write_safetensors(dir.join(WEIGHTS_FILE), &prefixed)?;
    // What PEFT needs to rebuild the same layers; every other field takes PEFT's default, which
    // is what rectify computes (no dropout at inference, no bias training).
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "target_modules": lora.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "lora_dropout": lora.dropout,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": lora.rslora,
        "use_dora": lora.dora,
        "modules_to_save": null,
        "inference_mode": true,
    });
    schemas::write_atomic(&dir.join(CONFIG_FILE), format!("{}\n", serde_json::to_string_pretty(&config)?).as_bytes())
}

/// Reads a PEFT adapter folder: its settings and its tensors by in-memory name. Settings that
/// rectify does not compute (trained biases, per-layer ranks, other modules, QA-LoRA) are errors naming the field, since ignoring one would give another model.
pub fn read_adapter(dir: &Path) -> Result<(Lora, BTreeMap<String, HostTensor>)> {
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.is_file() {
        bail!("no PEFT adapter at {}: it holds no {CONFIG_FILE}", dir.display());
    }
    let text = std::fs::read_to_string(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
    let c: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", config_path.display()))?;
    let lora = lora_from_config(&c).with_context(|| format!("{}", config_path.display()))?;
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.is_file() && dir.join("adapter_model.bin").is_file() {
        bail!(
            "{}: the adapter is saved as adapter_model.bin (a pickle), which rectify does not read: save it again with PEFT's save_pretrained(..., safe_serialization=True)",
            dir.display()
        );
    }
    let mut tensors = BTreeMap::new();
    for (name, t) in read_safetensors(&weights)? {
        // `...lora_A.default.weight`: a model's state_dict (the adapter's name still in it), not
        // what `save_pretrained` writes; said once, not as every tensor missing and unexpected.
        let inner_name = |side: &str| name.contains(&format!(".{side}.")) && !name.ends_with(&format!(".{side}.weight"));
        if inner_name("lora_A") || inner_name("lora_B") {
            bail!(
                "{}: tensor `{name}` carries an adapter's name between `lora_A`/`lora_B` and `weight`: this is a model's state_dict, not an adapter as PEFT's save_pretrained writes it; save it with save_pretrained",
                weights.display()
            );
        }
        let Some(short) = name.strip_prefix(PREFIX) else {
            bail!("{}: tensor `{name}` lacks PEFT's `{PREFIX}` prefix", weights.display());
        };
        check_tensor(short, &t, &lora).with_context(|| format!("{}: tensor `{name}`", weights.display()))?;
        tensors.insert(short.to_string(), t);
    }
    Ok((lora, tensors))
}

/// What the config says of one adapter tensor, checked before shapes are compared with a
/// model's: which projection it adapts, its rank, a DoRA magnitude only with `use_dora`, and
/// finite values (a NaN would merge into every weight it touches, and train to NaN).
fn check_tensor(name: &str, t: &HostTensor, lora: &Lora) -> Result<()> {
    let side = [(".lora_A.weight", Some(0)), (".lora_B.weight", Some(1)), (MAGNITUDE, None)]
        .into_iter()
        .find_map(|(end, dim)| name.strip_suffix(end).map(|m| (m, dim)));
    if let Some((module, dim)) = side {
        let projection = module.rsplit('.').next().unwrap_or_default();
        if let Some(target) = LoraTarget::from_name(projection).filter(|t| !lora.adapts(*t)) {
            bail!("it adapts {}, which `target_modules` does not list", target.as_str());
        }
        match dim {
            Some(dim) if t.shape.len() == 2 && t.shape[dim] != lora.rank => bail!("its rank is {}, `r` is {}", t.shape[dim], lora.rank),
            None if !lora.dora => bail!("it is a DoRA magnitude, but `use_dora` is not set: the config and the weights disagree"),
            _ => {}
        }
    }
    if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
        bail!("it holds {bad}: the adapter is broken (a training run that diverged?)");
    }
    Ok(())
}

/// sha256 over an adapter folder's settings and weights: which adapters a run started from, kept
/// with its checkpoints (a path's text may name another folder from another place).
pub fn adapter_sha256(dir: &Path) -> Result<String> {
    let mut joined = String::new();
    for file in [CONFIG_FILE, WEIGHTS_FILE] {
        joined.push_str(&format!("{}  {file}\n", schemas::sha256_file(&dir.join(file))?));
    }
    Ok(schemas::sha256_hex(joined.as_bytes()))
}

/// Whether `named`, the base an adapter records ([`base_model`]), is by its name another model
/// than `base`: a Hub id `Org/Name` and a local `.../Name` folder (or a file in it) are one. For
/// a warning: that the shapes fit is all a merge can check.
pub fn names_other_base(named: &str, base: &Path) -> bool {
    // A weights file stands for its folder; a GGUF, or a name that is no file here, for itself.
    let stem = |p: &Path| {
        let p = if p.is_file() && !crate::checkpoint::is_gguf(p) { crate::checkpoint::model_folder(p) } else { p };
        p.file_name().map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_lowercase())
    };
    let given = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    stem(Path::new(named.trim_end_matches('/'))) != stem(&given)
}

/// The `base_model_name_or_path` an adapter folder records, if it records one: a Hub name or a
/// path, as the adapter's trainer saw it.
pub fn base_model(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(CONFIG_FILE)).ok()?;
    let c: Value = serde_json::from_str(&text).ok()?;
    c.get("base_model_name_or_path")?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// What to do with an adapter rectify does not compute: PEFT computes it, and its merged model is
/// an ordinary one.
const MERGE_WITH_PEFT: &str =
    "merge it into its base with PEFT (`PeftModel.from_pretrained(base, DIR).merge_and_unload().save_pretrained(OUT)`) and give rectify OUT as the model";

/// The `adapter_config.json` keys that rectify reads, checks above, or knows to change nothing
/// once an adapter is trained: what it was made for and with (names, versions, dropout, the
/// initialisations that leave the base alone, settings only read with a switch that is off).
const KNOWN_KEYS: &[&str] = &[
    "peft_type",
    "task_type",
    "base_model_name_or_path",
    "revision",
    "auto_mapping",
    "peft_version",
    "inference_mode",
    "r",
    "lora_alpha",
    "target_modules",
    "lora_dropout",
    "init_lora_weights",
    "use_rslora",
    "use_dora",
    "use_qalora",
    "qalora_group_size",
    "lora_bias",
    "fan_in_fan_out",
    "bias",
    "rank_pattern",
    "alpha_pattern",
    "modules_to_save",
    "layers_to_transform",
    "layers_pattern",
    "layer_replication",
    "exclude_modules",
    "trainable_token_indices",
    "target_parameters",
    "alora_invocation_tokens",
    "ensure_weight_tying",
    "eva_config",
    "megatron_core",
];

fn lora_from_config(c: &Value) -> Result<Lora> {
    let field = |k: &str| c.get(k).filter(|v| !v.is_null());
    if let Some(t) = field("peft_type").and_then(Value::as_str).filter(|t| *t != "LORA") {
        bail!("`peft_type` is {t}: only LORA adapters are read");
    }
    // Each of these, set, changes what the adapter computes.
    for (key, off) in [("use_qalora", json!(false)), ("lora_bias", json!(false)), ("fan_in_fan_out", json!(false)), ("bias", json!("none"))]
    {
        if let Some(v) = field(key).filter(|v| **v != off) {
            bail!("`{key}` is {v}: rectify computes LoRA with {key} {off} only; {MERGE_WITH_PEFT}");
        }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if field(key).is_some_and(|v| v.as_object().is_none_or(|o| !o.is_empty())) {
            bail!("`{key}` is set: rectify gives every adapted projection the same rank and alpha; {MERGE_WITH_PEFT}");
        }
    }
    for key in [
        "modules_to_save",
        "layers_to_transform",
        "layer_replication",
        "exclude_modules",
        "trainable_token_indices",
        "target_parameters",
        "alora_invocation_tokens",
    ] {
        if let Some(v) = field(key).filter(|v| v.as_array().is_none_or(|a| !a.is_empty())) {
            bail!("`{key}` is {v}: rectify adapts the named projections of every block, and nothing else; {MERGE_WITH_PEFT}");
        }
    }
    // Initialisations that move the base weights (PiSSA, OLoRA, LoftQ, CorDA, LoRA-GA) leave an
    // adapter for the moved base, not for the model it names; PEFT converts them to a plain
    // LoRA on save when asked (`path_initial_model_for_weight_conversion`), and records `true`.
    match field("init_lora_weights") {
        None | Some(Value::Bool(_)) => {}
        Some(Value::String(s)) if ["gaussian", "orthogonal", "eva"].contains(&s.as_str()) => {}
        Some(v) => bail!(
            "`init_lora_weights` is {v}: that initialisation changes the base weights, so this adapter fits a model other than its base; have PEFT convert it to a plain LoRA when saving (path_initial_model_for_weight_conversion)"
        ),
    }
    // Any other setting, in a PEFT version newer than rectify knows, may change what the adapter
    // computes (Arrow routing, MonteCLoRA, block-diagonal LoRA, ...): one that is set is refused.
    for (key, v) in c.as_object().into_iter().flatten() {
        let set = !(v.is_null() || *v == json!(false) || *v == json!({}) || *v == json!([]));
        if set && !KNOWN_KEYS.contains(&key.as_str()) {
            bail!(
                "`{key}` is {v}: rectify does not know what it computes, so it cannot merge this adapter as PEFT would; {MERGE_WITH_PEFT}"
            );
        }
    }
    let rank = match field("r") {
        None => bail!("`r` (the rank) is missing"),
        Some(v) => v.as_u64().filter(|&r| r >= 1).with_context(|| format!("`r` is {v}: the rank is a whole number, at least 1"))?,
    } as usize;
    let alpha = match field("lora_alpha") {
        None => bail!("`lora_alpha` is missing"),
        Some(v) => v.as_f64().filter(|a| *a > 0.0).with_context(|| format!("`lora_alpha` is {v}: it must be a positive number"))?,
    };
    let targets = match field("target_modules") {
        Some(Value::String(s)) if s == "all-linear" => LoraTarget::ALL.to_vec(),
        Some(Value::Array(names)) => {
            let mut targets = Vec::new();
            for n in names {
                let name = n.as_str().context("`target_modules` holds a value that is not a module name")?;
                let target = LoraTarget::from_name(name).with_context(|| {
                    let all: Vec<&str> = LoraTarget::ALL.iter().map(|t| t.as_str()).collect();
                    format!("`target_modules` names `{name}`: rectify adapts only {}", all.join(", "))
                })?;
                targets.push(target);
            }
            if targets.is_empty() {
                bail!("`target_modules` is empty: the adapter adapts nothing");
            }
            // PEFT keeps a set: its order means nothing.
            targets.sort();
            targets.dedup();
            targets
        }
        Some(other) => bail!("`target_modules` is {other}: rectify reads a list of module names, or \"all-linear\""),
        None => bail!("`target_modules` is missing"),
    };
    // rsLoRA: another scale for the same tensors. DoRA: a magnitude per output row besides.
    let switch = |key: &str| match field(key) {
        None => Ok(false),
        Some(v) => v.as_bool().with_context(|| format!("`{key}` is {v}: it is true or false")),
    };
    let (rslora, dora) = (switch("use_rslora")?, switch("use_dora")?);
    // `lora_dropout` is how the adapter was trained, and changes nothing once it is (dropout is
    // off in inference and merges; a run continuing from it trains with its recipe's): not read.
    let lora = Lora { rank, alpha, targets, rslora, dora, dropout: 0.0, from: None };
    lora.validate()?;
    Ok(lora)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_adapters_read_back_and_unknown_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lora = Lora::plain(2, 4.0, vec![LoraTarget::QProj, LoraTarget::DownProj]);
        let t = HostTensor { shape: vec![2, 3], data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] };
        let tensors = BTreeMap::from([("model.layers.0.self_attn.q_proj.lora_A.weight".to_string(), t)]);
        write_adapter(dir.path(), &lora, &tensors, "base").unwrap();
        let (back, read) = read_adapter(dir.path()).unwrap();
        assert_eq!((back, read), (lora.clone(), tensors.clone()));
        // Dropout is recorded as PEFT records it, and not read back: it trained the adapter.
        let dropped = Lora { dropout: 0.1, ..lora.clone() };
        write_adapter(dir.path(), &dropped, &tensors, "base").unwrap();
        assert!(std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap().contains(r#""lora_dropout": 0.1"#));
        assert_eq!(read_adapter(dir.path()).unwrap().0, lora);
        // rsLoRA's scale is written as PEFT spells it, and read back.
        let rs = Lora { rslora: true, ..lora.clone() };
        write_adapter(dir.path(), &rs, &tensors, "base").unwrap();
        assert!(std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap().contains(r#""use_rslora": true"#));
        assert_eq!(read_adapter(dir.path()).unwrap().0, rs);
        // DoRA's magnitudes ([out], PEFT's name without `.weight`) and its switch, both ways.
        let dora = Lora { dora: true, ..rs };
        let mut with_magnitude = tensors.clone();
        let m = HostTensor { shape: vec![2], data: vec![0.5, 2.0] };
        with_magnitude.insert(format!("model.layers.0.self_attn.q_proj{MAGNITUDE}"), m);
        write_adapter(dir.path(), &dora, &with_magnitude, "base").unwrap();
        assert!(std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap().contains(r#""use_dora": true"#));
        assert_eq!(read_adapter(dir.path()).unwrap(), (dora, with_magnitude.clone()));
        write_adapter(dir.path(), &lora, &with_magnitude, "base").unwrap();
        let err = format!("{:#}", read_adapter(dir.path()).unwrap_err());
        assert!(err.contains("q_proj.lora_magnitude_vector`: it is a DoRA magnitude, but `use_dora` is not set"), "{err}");
        let base = json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]});
        for (patch, said) in [
            (json!({"use_rslora": "yes"}), "`use_rslora` is \"yes\": it is true or false"),
            (json!({"use_qalora": true}), "`use_qalora` is true"),
            (json!({"use_dora": 1}), "`use_dora` is 1: it is true or false"),
            (json!({"alora_invocation_tokens": [1, 2]}), "`alora_invocation_tokens` is [1,2]"),
            (json!({"lora_bias": true}), "`lora_bias` is true"),
            (json!({"bias": "all"}), "`bias` is \"all\""),
            (json!({"rank_pattern": {"q_proj": 8}}), "`rank_pattern` is set"),
            (json!({"modules_to_save": ["lm_head"]}), "`modules_to_save` is [\"lm_head\"]"),
            (json!({"target_modules": ["lm_head"]}), "`target_modules` names `lm_head`"),
            (json!({"target_modules": ".*proj"}), "`target_modules` is \".*proj\""),
            (json!({"peft_type": "IA3"}), "`peft_type` is IA3"),
            (json!({"r": 0}), "`r` is 0: the rank is a whole number, at least 1"),
            (json!({"r": "4"}), "`r` is \"4\": the rank is a whole number"),
            (json!({"lora_alpha": -8}), "`lora_alpha` is -8: it must be a positive number"),
            (json!({"target_modules": []}), "`target_modules` is empty"),
            (json!({"lora_bias": true}), "merge_and_unload()"),
            (
                json!({"init_lora_weights": "pissa_niter_4"}),
                "`init_lora_weights` is \"pissa_niter_4\": that initialisation changes the base",
            ),
            (json!({"use_bdlora": {"nblocks": 2}}), "`use_bdlora` is {\"nblocks\":2}: rectify does not know what it computes"),
            (json!({"arrow_config": {"top_k": 3}}), "`arrow_config` is {\"top_k\":3}"),
        ] {
            let mut c = base.clone();
            c.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
            let err = format!("{:#}", lora_from_config(&c).unwrap_err());
            assert!(err.contains(said), "{patch}: {err}");
        }
        // PEFT's defaults as its files spell them are accepted; all-linear is every projection.
        let mut c = base.clone();
        c.as_object_mut().unwrap().extend(
            json!({"target_modules": "all-linear", "rank_pattern": {}, "modules_to_save": null, "use_rslora": false, "bias": "none",
                "init_lora_weights": "gaussian", "lora_dropout": 0.05, "loftq_config": {}, "eva_config": null, "use_bdlora": null,
                "megatron_core": "megatron.core", "qalora_group_size": 16})
            .as_object()
            .unwrap()
            .clone(),
        );
        assert_eq!(lora_from_config(&c).unwrap().targets, LoraTarget::ALL.to_vec());
    }

    /// The tensors must be what the config says, and finite; a folder must be an adapter's.
    #[test]
    fn adapter_tensors_are_checked_against_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let lora = Lora::plain(2, 4.0, vec![LoraTarget::QProj]);
        let a = |data: Vec<f32>| HostTensor { shape: vec![2, 3], data };
        let read = |name: &str, t: HostTensor| {
            let d = dir.path().join(name);
            write_adapter(&d, &lora, &BTreeMap::from([(format!("model.layers.0.self_attn.{name}.weight"), t)]), "base").unwrap();
            read_adapter(&d).map(|_| ()).map_err(|e| format!("{e:#}"))
        };
        read("q_proj.lora_A", a(vec![0.5; 6])).unwrap();
        let err = read("q_proj.lora_A", a(vec![0.5, f32::NAN, 0.0, 0.0, 0.0, 0.0])).unwrap_err();
        assert!(err.contains("q_proj.lora_A.weight`: it holds NaN"), "{err}");
        let err = read("v_proj.lora_A", a(vec![0.5; 6])).unwrap_err();
        assert!(err.contains("it adapts v_proj, which `target_modules` does not list"), "{err}");
        let err = read("q_proj.lora_B", a(vec![0.5; 6])).unwrap_err();
        assert!(err.contains("its rank is 3, `r` is 2"), "{err}");
        // A state_dict dump with PEFT's adapter name in the tensor names.
        let dumped = dir.path().join("dumped");
        write_adapter(
            &dumped,
            &lora,
            &BTreeMap::from([("model.layers.0.self_attn.q_proj.lora_A.default.weight".to_string(), a(vec![0.5; 6]))]),
            "base",
        )
        .unwrap();
        let err = format!("{:#}", read_adapter(&dumped).unwrap_err());
        assert!(err.contains("carries an adapter's name between `lora_A`/`lora_B` and `weight`"), "{err}");
        // Not an adapter folder; an adapter PEFT pickled.
        let err = format!("{:#}", read_adapter(dir.path()).unwrap_err());
        assert!(err.contains("no PEFT adapter at") && err.contains("holds no adapter_config.json"), "{err}");
        let pickled = dir.path().join("pickled");
        write_adapter(&pickled, &lora, &BTreeMap::new(), "base").unwrap();
        std::fs::rename(pickled.join(WEIGHTS_FILE), pickled.join("adapter_model.bin")).unwrap();
        let err = format!("{:#}", read_adapter(&pickled).unwrap_err());
        assert!(err.contains("adapter_model.bin (a pickle)") && err.contains("safe_serialization=True"), "{err}");
    }
}
