//! Host-side model weights: load a Llama-family checkpoint from GGUF or Hugging Face safetensors
//! into f32 tensors with Hugging Face names and layouts, check it against its config, and save it
//! back as a Hugging Face checkpoint that Python `transformers` loads.
//!
//! Everything here is plain `Vec<f32>`; turning tensors into device tensors is the model's job.
//!
//! Two things make GGUF files differ from the Hugging Face checkpoint they came from, and both are
//! undone on load so that every user of a checkpoint sees one layout only:
//! - ggml lists dimensions fastest-first, so GGUF dims `(576, 1536)` is row-major `[1536, 576]`;
//! - llama.cpp's converter permutes the rows of Q and K (architecture `llama` only) so that its
//!   RoPE can rotate adjacent pairs; Hugging Face rotates the two halves of each head instead
//!   (`rotate_half`). See [`unpermute_from_gguf`].

use crate::config::{LlamaConfig, ModelType};
use crate::gguf::{dequantize, not_dequantizable, GgmlType, Gguf, ROPE_FREQS_TENSOR};
use crate::params::Params;
use crate::safetensors::{ignorable_safetensors_name, read_index, read_shard, write_safetensors};
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use schemas::manifest::InputFile;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// A dense f32 tensor, row-major, in Hugging Face's shape convention (`q_proj.weight` is
/// `[out_features, in_features]`).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            bail!("shape {shape:?} holds {n} values but {} were given", data.len());
        }
        Ok(HostTensor { shape, data })
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// A model's config and its weights under Hugging Face names.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub config: LlamaConfig,
    pub tensors: BTreeMap<String, HostTensor>,
}

/// Every tensor a checkpoint of `cfg` must have, with its shape, in [`Params::map`] order.
pub fn expected_tensors(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    Params::shapes(cfg).into_named().into_iter().map(|(n, shape)| (n.hf, shape)).collect()
}

/// Problems listed in one error before the rest are only counted.
const MAX_LISTED_PROBLEMS: usize = 20;

impl Checkpoint {
    /// The config is supported and the tensors are exactly [`expected_tensors`]: every problem is
    /// reported, each naming its tensor.
    pub fn validate(&self) -> Result<()> {
        self.config.validate().context("unsupported model config")?;
        let expected = expected_tensors(&self.config);
        let mut problems = Vec::new();
        for (name, shape) in &expected {
            match self.tensors.get(name) {
                None => problems.push(format!("{name}: missing")),
                Some(t) if &t.shape != shape => problems.push(format!("{name}: shape {:?}, expected {shape:?}", t.shape)),
                Some(t) if t.data.len() != shape.iter().product::<usize>() => {
                    problems.push(format!("{name}: {} values for shape {shape:?}", t.data.len()))
                }
                Some(_) => {}
            }
        }
        let names: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        for name in self.tensors.keys().filter(|n| !names.contains(n.as_str())) {
            if name == "lm_head.weight" && self.config.tie_word_embeddings {
                problems.push(format!(
                    "unexpected tensor `{name}` (tie_word_embeddings is true: the output layer is model.embed_tokens.weight)"
                ));
            } else {
                problems.push(format!("unexpected tensor `{name}`"));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        let n = problems.len();
        let mut msg = problems.into_iter().take(MAX_LISTED_PROBLEMS).collect::<Vec<_>>().join("; ");
        if n > MAX_LISTED_PROBLEMS {
            msg.push_str(&format!("; and {} more", n - MAX_LISTED_PROBLEMS));
        }
        bail!("checkpoint does not match its config ({n} problem{}): {msg}", if n == 1 { "" } else { "s" })
    }

    pub fn n_params(&self) -> usize {
        self.tensors.values().map(HostTensor::numel).sum()
    }
}

/// Load a checkpoint: a `.gguf` file, or safetensors (a model directory or a `.safetensors` file).
pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    if is_gguf(path) {
        load_gguf(path)
    } else {
        load_safetensors(path)
    }
}

/// Whether [`load`] reads `path` as a GGUF file (by its extension), else as safetensors.
pub fn is_gguf(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The folder of a Hugging Face model: `model` itself, or the folder a lone `.safetensors` file
/// is in (`.` for a bare file name). Its `tokenizer.json` and `config.json` are read from there.
pub fn model_folder(model: &Path) -> &Path {
    if model.is_dir() {
        model
    } else {
        model.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF

/// GGUF tensors with no Hugging Face counterpart, read into the config instead of the weights:
/// `rope_freqs.weight`'s per-frequency factors become the config's llama3 `rope_scaling`.
pub const IGNORED_GGUF_TENSORS: &[&str] = &[ROPE_FREQS_TENSOR];

/// llama.cpp tensor name -> Hugging Face name, for every parameter a decoder of `layers` blocks
/// can have (see [`Params::every`]).
pub fn hf_names_from_gguf(layers: usize) -> BTreeMap<String, String> {
    Params::every(layers).into_named().into_iter().map(|(n, ())| (n.gguf, n.hf)).collect()
}

/// Reorder the rows (first dimension) of a `[rows]` or `[rows, cols]` tensor:
/// row `r` of the result is row `src(r)` of `t`.
fn reorder_rows(t: &HostTensor, src: impl Fn(usize) -> usize) -> HostTensor {
    let rows = t.shape[0];
    let cols = t.data.len().checked_div(rows).unwrap_or(0);
    let mut data = Vec::with_capacity(t.data.len());
    for r in 0..rows {
        let s = src(r);
        data.extend_from_slice(&t.data[s * cols..(s + 1) * cols]);
    }
    HostTensor { shape: t.shape.clone(), data }
}

fn rope_geometry(t: &HostTensor, n_head: usize) -> Result<(usize, usize)> {
    let rows = *t.shape.first().ok_or_else(|| anyhow!("cannot permute a scalar"))?;
    if t.shape.len() > 2 || n_head == 0 || rows % (2 * n_head) != 0 {
        bail!("cannot split shape {:?} into {n_head} heads of an even size", t.shape);
    }
    let head_dim = rows / n_head;
    Ok((head_dim, head_dim / 2))
}

/// Hugging Face → GGUF row order of a Q or K weight (or bias), as llama.cpp's
/// `convert_hf_to_gguf.py` does for architecture `llama`:
/// `w.reshape(n_head, 2, head_dim/2, in).swapaxes(1, 2).reshape(w.shape)`.
/// Within each head, HF rows `[x0 .. x(d/2-1), y0 .. y(d/2-1)]` (RoPE pairs `(xi, yi)`) become
/// `[x0, y0, x1, y1, ...]`. For K, `n_head` is the number of key/value heads.
pub fn permute_for_gguf(t: &HostTensor, n_head: usize) -> Result<HostTensor> {
    let (hd, half) = rope_geometry(t, n_head)?;
    // GGUF row h*hd + 2i + j comes from HF row h*hd + j*half + i.
    Ok(reorder_rows(t, |r| {
        let (h, k) = (r / hd, r % hd);
        h * hd + (k % 2) * half + k / 2
    }))
}

/// The inverse of [`permute_for_gguf`]: GGUF → Hugging Face row order,
/// `w.reshape(n_head, head_dim/2, 2, in).swapaxes(1, 2).reshape(w.shape)`.
pub fn unpermute_from_gguf(t: &HostTensor, n_head: usize) -> Result<HostTensor> {
    let (hd, half) = rope_geometry(t, n_head)?;
    Ok(reorder_rows(t, |r| gguf_row_of_hf_row(r, hd, half)))
}

/// HF row `h*hd + j*half + i` comes from GGUF row `h*hd + 2i + j`.
fn gguf_row_of_hf_row(r: usize, hd: usize, half: usize) -> usize {
    let (h, k) = (r / hd, r % hd);
    h * hd + 2 * (k % half) + k / half
}

/// A GGUF matrix still in its quantised blocks, rows in Hugging Face order: what the CPU
/// decoder streams instead of f32 (`model::matmul`).
#[derive(Debug, Clone)]
pub struct QuantisedMatrix {
    pub ggml_type: GgmlType,
    /// `[out, in]`, as the Hugging Face tensor.
    pub shape: [usize; 2],
    /// `out` rows of `in / block_elems` blocks each.
    pub bytes: Vec<u8>,
}

/// The matrices of a GGUF model stored in one of `types`, by Hugging Face name, undoing the
/// Q/K row permutation of `llama` files as [`load_gguf`] does (a block never spans two rows).
pub fn gguf_quantised_matrices(path: impl AsRef<Path>, types: &[GgmlType]) -> Result<BTreeMap<String, QuantisedMatrix>> {
    let path = path.as_ref();
    let g = Gguf::open(path)?;
    let config = LlamaConfig::from_gguf(&g)?;
    let hf_names = hf_names_from_gguf(config.num_hidden_layers);
    let names = Params::shapes(&config).map(|n, _| n.hf.clone());
    let mut heads_of: BTreeMap<&str, usize> = BTreeMap::new();
    if config.model_type == ModelType::Llama {
        for l in &names.layers {
            heads_of.insert(&l.q_proj, config.num_attention_heads);
            heads_of.insert(&l.k_proj, config.num_key_value_heads);
        }
    }
    let mut out = BTreeMap::new();
    for t in &g.tensors {
        let (Some(hf), Some(ty)) = (hf_names.get(&t.name), GgmlType::from_id(t.ggml_type)) else { continue };
        if t.dims.len() != 2 || !types.contains(&ty) {
            continue;
        }
        let shape = [t.dims[1] as usize, t.dims[0] as usize];
        let mut bytes = g.tensor_bytes(t)?;
        if let Some(&n_head) = heads_of.get(hf.as_str()) {
            let row = bytes.len() / shape[0];
            let (hd, half) = rope_geometry(&HostTensor { shape: shape.to_vec(), data: vec![] }, n_head)?;
            bytes = (0..shape[0]).flat_map(|r| bytes[gguf_row_of_hf_row(r, hd, half) * row..][..row].to_vec()).collect();
        }
        out.insert(hf.clone(), QuantisedMatrix { ggml_type: ty, shape, bytes });
    }
    Ok(out)
}

/// Read a GGUF model (`llama`, `qwen2` or `qwen3`), dequantised to f32, in Hugging Face names and layout.
pub fn load_gguf(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let g = Gguf::open(path)?;
    let config = LlamaConfig::from_gguf(&g)?;

    // Names and types are checked before any tensor data is read, so a file this loader cannot
    // use fails at once.
    let hf_names = hf_names_from_gguf(config.num_hidden_layers);
    let mut jobs = Vec::with_capacity(g.tensors.len());
    for t in &g.tensors {
        if IGNORED_GGUF_TENSORS.contains(&t.name.as_str()) {
            continue;
        }
        let hf = hf_names
            .get(&t.name)
            .cloned()
            .ok_or_else(|| anyhow!("{}: tensor `{}` has no Hugging Face counterpart this loader knows", path.display(), t.name))?;
        if let Some(why) = not_dequantizable(t.ggml_type) {
            bail!("{}: tensor `{}` has {why}", path.display(), t.name);
        }
        jobs.push((hf, t));
    }

    let loaded = jobs
        .par_iter()
        .map(|(hf, t)| -> Result<(String, HostTensor)> {
            let bytes = g.tensor_bytes(t)?;
            let data = dequantize(t.ggml_type, &bytes, t.n_elements() as usize)
                .with_context(|| format!("{}: tensor `{}`", path.display(), t.name))?;
            // ggml lists the fastest-varying dimension first.
            let shape = t.dims.iter().rev().map(|&d| d as usize).collect();
            Ok((hf.clone(), HostTensor { shape, data }))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut tensors = BTreeMap::new();
    for (name, t) in loaded {
        if tensors.insert(name.clone(), t).is_some() {
            bail!("{}: two tensors map to `{name}`", path.display());
        }
    }

    let mut ckpt = Checkpoint { config, tensors };
    ckpt.validate().with_context(|| format!("{}: not a usable {} model", path.display(), ckpt.config.model_type))?;
    if ckpt.config.model_type == ModelType::Llama {
        undo_llama_qk_permutation(&mut ckpt)?;
    }
    Ok(ckpt)
}

/// Put Q and K rows back in Hugging Face order (qwen2 and qwen3 GGUF files are not permuted).
fn undo_llama_qk_permutation(ckpt: &mut Checkpoint) -> Result<()> {
    let (heads, kv_heads) = (ckpt.config.num_attention_heads, ckpt.config.num_key_value_heads);
    let names = Params::shapes(&ckpt.config).map(|n, _| n.hf.clone());
    for l in &names.layers {
        let q = [Some(&l.q_proj), l.q_bias.as_ref()].into_iter().flatten().map(|n| (n, heads));
        let k = [Some(&l.k_proj), l.k_bias.as_ref()].into_iter().flatten().map(|n| (n, kv_heads));
        for (name, n_head) in q.chain(k) {
            let t = ckpt.tensors.get_mut(name).expect("validated");
            *t = unpermute_from_gguf(t, n_head).with_context(|| format!("tensor `{name}`"))?;
        }
    }
    Ok(())
}

/// Read a Hugging Face safetensors checkpoint: a directory with `config.json` and either
/// `model.safetensors` or `model.safetensors.index.json` plus its shards (the single file wins
/// when both exist, as in transformers), or one `.safetensors` file with `config.json` beside it.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    refuse_adapter(path)?;
    let (dir, files, index): (PathBuf, Vec<PathBuf>, Option<BTreeMap<String, String>>) = if path.is_dir() {
        let single = path.join("model.safetensors");
        let index_path = path.join("model.safetensors.index.json");
        if single.is_file() {
            (path.to_path_buf(), vec![single], None)
        } else if index_path.is_file() {
            let map = read_index(&index_path)?;
            let shards: BTreeSet<&String> = map.values().collect();
            (path.to_path_buf(), shards.into_iter().map(|s| path.join(s)).collect(), Some(map))
        } else {
            bail!("{}: neither model.safetensors nor model.safetensors.index.json is there", path.display());
        }
    } else if path.is_file() {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        (dir.to_path_buf(), vec![path.to_path_buf()], None)
    } else {
        bail!("{}: no such file or directory", path.display());
    };
    let config = LlamaConfig::from_file(dir.join("config.json"))?;

    let mut tensors = BTreeMap::new();
    for file in &files {
        let shard_name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        for (name, t) in read_shard(file)? {
            if ignorable_safetensors_name(&name) {
                continue;
            }
            if let Some(map) = &index {
                match map.get(&name) {
                    Some(s) if s == shard_name => {}
                    Some(s) => bail!("{}: tensor `{name}` is in {shard_name} but the index puts it in {s}", file.display()),
                    None => bail!("{}: tensor `{name}` is not listed in model.safetensors.index.json", file.display()),
                }
            }
            if tensors.insert(name.clone(), t).is_some() {
                bail!("{}: tensor `{name}` appears in more than one shard", file.display());
            }
        }
    }
    if let Some(map) = &index {
        if let Some((name, shard)) = map.iter().find(|(n, _)| !tensors.contains_key(*n) && !ignorable_safetensors_name(n)) {
            bail!("{}: tensor `{name}` is listed in the index but missing from {shard}", dir.display());
        }
    }

    // Some tied checkpoints still carry a copy of the embeddings as lm_head; it is only dropped
    // when it really is a copy, since otherwise the config and the weights disagree.
    if config.tie_word_embeddings {
        if let Some(head) = tensors.get("lm_head.weight") {
            if tensors.get("model.embed_tokens.weight") != Some(head) {
                bail!("{}: config.json ties the embeddings but lm_head.weight differs from model.embed_tokens.weight", path.display());
            }
            tensors.remove("lm_head.weight");
        }
    }

    let ckpt = Checkpoint { config, tensors };
    ckpt.validate().with_context(|| format!("{}: not a usable checkpoint", path.display()))?;
    Ok(ckpt)
}

/// Write `dir/model.safetensors` (f32, see [`write_safetensors`]) and `dir/config.json`, each
/// atomically. The checkpoint is validated first; with tied embeddings there is no
/// `lm_head.weight` (validation rejects one).
pub fn save_hf(dir: impl AsRef<Path>, ckpt: &Checkpoint) -> Result<()> {
    let dir = dir.as_ref();
    ckpt.validate().context("refusing to save an invalid checkpoint")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_safetensors(dir.join("model.safetensors"), &ckpt.tensors)?;
    schemas::write_atomic(&dir.join("config.json"), ckpt.config.to_json().as_bytes())
}

/// Fails where `path` is not there (saying how to get the default model where it is that one),
/// or is a folder without a model's config or weights (saying what it is instead).
pub fn check_model_path(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_err() {
        let default = path.file_name().is_some_and(|n| n == "SmolLM2-135M-Instruct.Q4_1.gguf");
        bail!("model {} not found{}", path.display(), if default { " (run `make model` to fetch the default model)" } else { "" });
    }
    let weights = |d: &Path| {
        std::fs::read_dir(d).is_ok_and(|mut e| e.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))))
    };
    refuse_adapter(path)?;
    if path.is_dir() && !path.join("config.json").exists() && !weights(path) {
        bail!("{} holds no config.json or safetensors files{}", path.display(), what_folder_is_this(path));
    }
    Ok(())
}

/// Fails where `model` is a PEFT adapter folder, or a file in one: it holds safetensors too, but
/// is no model by itself.
fn refuse_adapter(model: &Path) -> Result<()> {
    let folder = model_folder(model);
    if folder.join(crate::lora::CONFIG_FILE).is_file() && !folder.join("config.json").exists() {
        // A LoRA run's `adapter/` sits in the folder of its merged model; an adapter kept in
        // its base's folder under another name does not.
        let merged = folder.parent().filter(|p| folder.file_name().is_some_and(|n| n == "adapter") && p.join("config.json").is_file());
        bail!(
            "{} is a LoRA adapter (PEFT's adapter_config.json), not a model: {}",
            folder.display(),
            match merged {
                Some(p) => format!("the model with it merged is {}", p.display()),
                None => format!(
                    "merge it into its base model first: `trainer export --model BASE --adapter {} --out MERGED`{}",
                    folder.display(),
                    crate::lora::base_model(folder).map(|b| format!(" (the adapter names its base `{b}`)")).unwrap_or_default()
                ),
            }
        );
    }
    Ok(())
}

/// What a folder given as a model holds instead, as a hint: a training run's folder (its model is
/// `final/`), or a snapshot.
fn what_folder_is_this(dir: &Path) -> String {
    if dir.join("final").is_dir() || dir.join("checkpoints").is_dir() {
        format!(": it is a training run; its model is {} (or a checkpoints/step-N folder)", dir.join("final").display())
    } else if dir.join("manifest.json").is_file() {
        ": it is a data snapshot, not a model".to_string()
    } else {
        String::new()
    }
}

/// sha256 of a model: of the file itself, or for a Hugging Face folder, over
/// `"<sha256>  <name>\n"` lines of its `config.json`, `*.safetensors` and
/// `*.safetensors.index.json` files sorted by name. Also returns the files.
pub fn model_hash(path: &Path) -> anyhow::Result<(String, Vec<InputFile>)> {
    let describe = |p: &Path, name: String| -> anyhow::Result<InputFile> {
        Ok(InputFile { role: "model".into(), path: name, sha256: schemas::sha256_file(p)?, bytes: std::fs::metadata(p)?.len() })
    };
    let safetensors_file = path.is_file() && path.extension().is_some_and(|e| e == "safetensors");
    if path.is_file() && !safetensors_file {
        let f = describe(path, path.display().to_string())?;
        return Ok((f.sha256.clone(), vec![f]));
    }
    // One safetensors file is read with the config.json beside it (see `load`), which changes
    // the model as much as the weights do.
    let (dir, names) = if safetensors_file {
        let dir = model_folder(path);
        let file = path.file_name().expect("a file").to_string_lossy().into_owned();
        (dir, vec!["config.json".to_string(), file])
    } else {
        check_model_path(path)?;
        let mut names = vec![];
        for entry in std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name == "config.json" || name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json") {
                names.push(name);
            }
        }
        names.sort();
        (path, names)
    };
    let files: Vec<InputFile> = names.iter().map(|n| describe(&dir.join(n), n.clone())).collect::<anyhow::Result<_>>()?;
    let joined: String = files.iter().map(|f| format!("{}  {}\n", f.sha256, f.path)).collect();
    Ok((schemas::sha256_hex(joined.as_bytes()), files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_model_path_says_what_is_there_instead() {
        let tmp = tempfile::tempdir().unwrap();
        let err = |p: &Path| check_model_path(p).unwrap_err().to_string();
        assert_eq!(err(&tmp.path().join("nowhere")), format!("model {} not found", tmp.path().join("nowhere").display()));
        assert!(err(&tmp.path().join("SmolLM2-135M-Instruct.Q4_1.gguf")).contains("run `make model`"));
        let run = tmp.path().join("run");
        std::fs::create_dir_all(run.join("final")).unwrap();
        assert!(err(&run)
            .ends_with(&format!("it is a training run; its model is {} (or a checkpoints/step-N folder)", run.join("final").display())));
        let snap = tmp.path().join("snap");
        std::fs::create_dir(&snap).unwrap();
        std::fs::write(snap.join("manifest.json"), "{}").unwrap();
        assert!(err(&snap).ends_with("it is a data snapshot, not a model"));
        std::fs::write(run.join("final").join("config.json"), "{}").unwrap();
        assert!(check_model_path(&run.join("final")).is_ok());
        // A LoRA run's adapter folder holds safetensors, but is no model: its parent is.
        let adapter = run.join("final").join("adapter");
        std::fs::create_dir(&adapter).unwrap();
        std::fs::write(adapter.join(crate::lora::CONFIG_FILE), "{}").unwrap();
        std::fs::write(adapter.join(crate::lora::WEIGHTS_FILE), "").unwrap();
        let said = format!("not a model: the model with it merged is {}", run.join("final").display());
        assert!(err(&adapter).ends_with(&said));
        // Loading it (as `trainer export` does), or its weights file alone, says the same.
        for p in [adapter.clone(), adapter.join(crate::lora::WEIGHTS_FILE)] {
            let e = load_safetensors(&p).unwrap_err().to_string();
            assert!(e.ends_with(&said), "{e}");
        }
        // An adapter trained elsewhere has no merged model beside it, even kept in its base's
        // folder: merging it is the way.
        let beside_base = run.join("final").join("lora");
        std::fs::create_dir(&beside_base).unwrap();
        std::fs::write(beside_base.join(crate::lora::CONFIG_FILE), "{}").unwrap();
        assert!(err(&beside_base).contains("merge it into its base model first: `trainer export --model BASE"), "{}", err(&beside_base));
        let alone = tmp.path().join("peft-adapter");
        std::fs::create_dir(&alone).unwrap();
        std::fs::write(alone.join(crate::lora::CONFIG_FILE), r#"{"base_model_name_or_path": "Qwen/Qwen2.5-0.5B"}"#).unwrap();
        let said = format!(
            "merge it into its base model first: `trainer export --model BASE --adapter {} --out MERGED` (the adapter names its base `Qwen/Qwen2.5-0.5B`)",
            alone.display()
        );
        assert!(err(&alone).ends_with(&said), "{}", err(&alone));
    }
    use crate::gguf::Value;
    use crate::gguf_writer::GgufWriter;
    use crate::safetensors::read_safetensors;
    use half::{bf16, f16};
    use safetensors::{Dtype, SafeTensors};
    use std::sync::OnceLock;

    // ----- model identity -----

    #[test]
    fn a_safetensors_file_is_hashed_with_the_config_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (config, weights) = (dir.path().join("config.json"), dir.path().join("model.safetensors"));
        std::fs::write(&config, r#"{"rope_theta": 10000.0}"#).unwrap();
        std::fs::write(&weights, b"weights").unwrap();
        let (by_file, files) = model_hash(&weights).unwrap();
        assert_eq!(files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["config.json", "model.safetensors"]);
        // The same two files, so the same model as the folder.
        assert_eq!(by_file, model_hash(dir.path()).unwrap().0);
        std::fs::write(&config, r#"{"rope_theta": 500000.0}"#).unwrap();
        assert_ne!(model_hash(&weights).unwrap().0, by_file, "a changed config.json is another model");
        // A GGUF file holds its own configuration: its hash is the file's.
        let gguf = dir.path().join("m.gguf");
        std::fs::write(&gguf, b"GGUF").unwrap();
        assert_eq!(model_hash(&gguf).unwrap().0, schemas::sha256_hex(b"GGUF"));
    }

    // ----- Q/K permutation -----

    fn rows(data: Vec<f32>, cols: usize) -> HostTensor {
        let r = data.len() / cols;
        HostTensor::new(if cols == 1 { vec![r] } else { vec![r, cols] }, data).unwrap()
    }

    #[test]
    fn permutation_hand_worked() {
        // One head of dim 6: HF rows [x0 x1 x2 y0 y1 y2] -> GGUF [x0 y0 x1 y1 x2 y2].
        let t = rows((0..6).map(|x| x as f32).collect(), 1);
        assert_eq!(permute_for_gguf(&t, 1).unwrap().data, vec![0., 3., 1., 4., 2., 5.]);
        assert_eq!(unpermute_from_gguf(&t, 1).unwrap().data, vec![0., 2., 4., 1., 3., 5.]);
        // Two heads of dim 4, two columns: rows move whole, each head on its own.
        let t = rows((0..16).map(|x| x as f32).collect(), 2);
        let p = permute_for_gguf(&t, 2).unwrap();
        assert_eq!(p.shape, vec![8, 2]);
        let row_order: Vec<f32> = p.data.chunks(2).map(|r| r[0] / 2.0).collect();
        assert_eq!(row_order, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        assert!(p.data.chunks(2).all(|r| r[1] == r[0] + 1.0));
    }

    #[test]
    fn permutation_round_trips() {
        for (n_head, hd, cols) in [(9, 64, 3), (3, 64, 1), (2, 8, 5), (4, 2, 2)] {
            let t = rows((0..n_head * hd * cols).map(|x| x as f32).collect(), cols);
            let p = permute_for_gguf(&t, n_head).unwrap();
            // With head_dim 2 the permutation is the identity.
            assert_eq!(p == t, hd == 2);
            assert_eq!(unpermute_from_gguf(&p, n_head).unwrap(), t);
            assert_eq!(permute_for_gguf(&unpermute_from_gguf(&t, n_head).unwrap(), n_head).unwrap(), t);
        }
        assert!(permute_for_gguf(&rows(vec![0.; 6], 1), 2).is_err(), "3 rows per head cannot be paired");
    }

    #[test]
    fn gguf_names_map() {
        let names = hf_names_from_gguf(13);
        let hf = |gguf: &str| names.get(gguf).map(String::as_str);
        // As llama.cpp's convert_hf_to_gguf.py writes them.
        assert_eq!(hf("token_embd.weight"), Some("model.embed_tokens.weight"));
        assert_eq!(hf("output.weight"), Some("lm_head.weight"));
        assert_eq!(hf("output_norm.weight"), Some("model.norm.weight"));
        assert_eq!(hf("blk.12.attn_output.weight"), Some("model.layers.12.self_attn.o_proj.weight"));
        assert_eq!(hf("blk.0.attn_k.bias"), Some("model.layers.0.self_attn.k_proj.bias"));
        assert_eq!(hf("blk.3.ffn_norm.weight"), Some("model.layers.3.post_attention_layernorm.weight"));
        assert_eq!(hf("blk.3.attn_norm.weight"), Some("model.layers.3.input_layernorm.weight"));
        assert_eq!(hf("blk.7.ffn_gate.weight"), Some("model.layers.7.mlp.gate_proj.weight"));
        assert_eq!(hf("blk.5.attn_q_norm.weight"), Some("model.layers.5.self_attn.q_norm.weight"));
        assert_eq!(hf("blk.5.attn_k_norm.weight"), Some("model.layers.5.self_attn.k_norm.weight"));
        for bad in
            ["rope_freqs.weight", "blk.x.attn_q.weight", "blk.0.attn_qkv.weight", "blk.0.attn_q.scale", "blk.0", "blk.13.attn_q.weight"]
        {
            assert_eq!(hf(bad), None, "{bad}");
        }
        // 3 top-level tensors and 15 per block (with every bias and the q/k norms).
        assert_eq!(names.len(), 3 + 13 * 15);
    }

    // ----- tiny synthetic checkpoints -----

    fn tiny_config(model_type: &str, tied: bool) -> LlamaConfig {
        LlamaConfig::from_json(&format!(
            r#"{{"model_type": "{model_type}", "vocab_size": 11, "hidden_size": 8, "intermediate_size": 12,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
                "rms_norm_eps": 1e-6, "rope_theta": 500000.0, "max_position_embeddings": 32,
                "tie_word_embeddings": {tied}, "bos_token_id": 1, "eos_token_id": 2}}"#
        ))
        .unwrap()
    }

    /// Values exactly representable in f16 and bf16, different in every tensor.
    fn tiny_checkpoint(config: LlamaConfig) -> Checkpoint {
        let tensors = expected_tensors(&config)
            .into_iter()
            .enumerate()
            .map(|(k, (name, shape))| {
                let n: usize = shape.iter().product();
                let data = (0..n).map(|i| (((i * 7 + k * 3) % 33) as f32 - 16.0) * 0.125).collect();
                (name, HostTensor { shape, data })
            })
            .collect();
        Checkpoint { config, tensors }
    }

    fn write_typed(path: &Path, tensors: &[(&String, &HostTensor)], dtype: Dtype) {
        let bufs: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, t)| match dtype {
                Dtype::F32 => t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::F16 => t.data.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
                Dtype::BF16 => t.data.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
                Dtype::I32 => t.data.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
                other => panic!("test helper writes F32, F16, BF16 or I32, not {other:?}"),
            })
            .collect();
        let views: Vec<_> = tensors
            .iter()
            .zip(&bufs)
            .map(|((name, t), b)| (name.as_str(), safetensors::tensor::TensorView::new(dtype, t.shape.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    fn write_config(dir: &Path, cfg: &LlamaConfig) {
        std::fs::write(dir.join("config.json"), cfg.to_json()).unwrap();
    }

    #[test]
    fn expected_tensor_lists() {
        let llama = expected_tensors(&tiny_config("llama", true));
        assert_eq!(llama.len(), 1 + 2 * 9 + 1);
        assert!(llama.iter().all(|(n, _)| !n.ends_with(".bias") && n != "lm_head.weight"));
        let get = |l: &[(String, Vec<usize>)], n: &str| l.iter().find(|(x, _)| x == n).unwrap().1.clone();
        assert_eq!(get(&llama, "model.layers.1.self_attn.k_proj.weight"), vec![4, 8]);
        assert_eq!(get(&llama, "model.layers.1.self_attn.o_proj.weight"), vec![8, 8]);
        assert_eq!(get(&llama, "model.layers.0.mlp.down_proj.weight"), vec![8, 12]);
        let qwen = expected_tensors(&tiny_config("qwen2", false));
        assert_eq!(qwen.len(), 1 + 2 * 12 + 2);
        assert_eq!(get(&qwen, "model.layers.0.self_attn.v_proj.bias"), vec![4]);
        assert_eq!(get(&qwen, "lm_head.weight"), vec![11, 8]);
        assert!(!qwen.iter().any(|(n, _)| n.ends_with("o_proj.bias")));
        // Qwen3: no biases, a norm over each query and key head.
        let qwen3 = expected_tensors(&tiny_config("qwen3", true));
        assert_eq!(qwen3.len(), 1 + 2 * 11 + 1);
        assert!(qwen3.iter().all(|(n, _)| !n.ends_with(".bias") && n != "lm_head.weight"));
        assert_eq!(get(&qwen3, "model.layers.1.self_attn.q_norm.weight"), vec![4]);
        assert_eq!(get(&qwen3, "model.layers.0.self_attn.k_norm.weight"), vec![4]);
    }

    #[test]
    fn validate_names_the_tensor() {
        let good = tiny_checkpoint(tiny_config("llama", true));
        good.validate().unwrap();

        let mut c = good.clone();
        c.tensors.remove("model.layers.1.mlp.up_proj.weight");
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("model.layers.1.mlp.up_proj.weight: missing"), "{e}");

        let mut c = good.clone();
        c.tensors.insert("foo".into(), HostTensor { shape: vec![1], data: vec![0.0] });
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("unexpected tensor `foo`"), "{e}");

        let mut c = good.clone();
        c.tensors.get_mut("model.norm.weight").unwrap().shape = vec![2, 4];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("model.norm.weight: shape [2, 4], expected [8]"), "{e}");

        let mut c = good.clone();
        c.tensors.get_mut("model.layers.0.self_attn.q_proj.weight").unwrap().data.pop();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("model.layers.0.self_attn.q_proj.weight: 63 values"), "{e}");

        let mut c = good.clone();
        let emb = c.tensors["model.embed_tokens.weight"].clone();
        c.tensors.insert("lm_head.weight".into(), emb);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("unexpected tensor `lm_head.weight` (tie_word_embeddings"), "{e}");

        // Several problems are all reported.
        let mut c = good;
        c.tensors.remove("model.norm.weight");
        c.tensors.insert("bar".into(), HostTensor { shape: vec![1], data: vec![0.0] });
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("2 problems") && e.contains("model.norm.weight: missing") && e.contains("`bar`"), "{e}");
    }

    #[test]
    fn save_and_load_tiny_every_architecture() {
        for (arch, tied) in [("llama", true), ("llama", false), ("qwen2", true), ("qwen3", true)] {
            let ckpt = tiny_checkpoint(tiny_config(arch, tied));
            let dir = tempfile::tempdir().unwrap();
            save_hf(dir.path(), &ckpt).unwrap();
            let names: BTreeSet<String> =
                std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            assert_eq!(names, BTreeSet::from(["config.json".into(), "model.safetensors".into()]), "no temp files left");
            let back = load(dir.path()).unwrap();
            assert_eq!(back, Checkpoint { config: ckpt.config.export_form(), tensors: ckpt.tensors.clone() });
            // Also through the file path, with config.json found beside it.
            assert_eq!(load(dir.path().join("model.safetensors")).unwrap().tensors, ckpt.tensors);

            let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
            let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
            assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
            assert!(meta.tensors().values().all(|i| i.dtype == Dtype::F32));
            assert_eq!(meta.tensors().contains_key("lm_head.weight"), !tied);
            let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
            let want = match arch {
                "llama" => "LlamaForCausalLM",
                "qwen2" => "Qwen2ForCausalLM",
                _ => "Qwen3ForCausalLM",
            };
            assert_eq!(cfg["architectures"], serde_json::json!([want]));
            assert_eq!((cfg["model_type"].as_str(), cfg["torch_dtype"].as_str()), (Some(arch), Some("float32")));
        }
    }

    #[test]
    fn tensor_map_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        let mut map = BTreeMap::new();
        map.insert("m.a".to_string(), HostTensor::new(vec![2, 3], vec![1.0, -2.5, 3.0, f32::MIN_POSITIVE, 0.0, -0.0]).unwrap());
        map.insert("v.a".to_string(), HostTensor::new(vec![1, 1], vec![1e-30]).unwrap());
        write_safetensors(&path, &map).unwrap();
        let back = read_safetensors(&path).unwrap();
        assert_eq!(back, map);
        assert!(back["m.a"].data[5].is_sign_negative());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");

        map.get_mut("m.a").unwrap().shape = vec![7];
        let e = write_safetensors(&path, &map).unwrap_err().to_string();
        assert!(e.contains("tensor `m.a` has 6 values for shape [7]"), "{e}");
        let e = format!("{:#}", read_safetensors(dir.path().join("missing.safetensors")).unwrap_err());
        assert!(e.contains("missing.safetensors"), "{e}");
    }

    #[test]
    fn save_refuses_invalid_checkpoint() {
        let mut ckpt = tiny_checkpoint(tiny_config("llama", true));
        ckpt.tensors.remove("model.layers.0.input_layernorm.weight");
        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", save_hf(dir.path(), &ckpt).unwrap_err());
        assert!(e.contains("model.layers.0.input_layernorm.weight: missing"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn f16_and_bf16_safetensors_load() {
        for dtype in [Dtype::F16, Dtype::BF16] {
            let ckpt = tiny_checkpoint(tiny_config("qwen2", true));
            let dir = tempfile::tempdir().unwrap();
            write_config(dir.path(), &ckpt.config);
            let list: Vec<_> = ckpt.tensors.iter().collect();
            write_typed(&dir.path().join("model.safetensors"), &list, dtype);
            let back = load_safetensors(dir.path()).unwrap();
            assert_eq!(back.tensors, ckpt.tensors, "{dtype:?}");
        }
    }

    #[test]
    fn sharded_checkpoint_loads() {
        let ckpt = tiny_checkpoint(tiny_config("llama", false));
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &ckpt.config);
        let list: Vec<_> = ckpt.tensors.iter().collect();
        let (a, b) = list.split_at(list.len() / 2);
        let shard = |i| format!("model-0000{i}-of-00002.safetensors");
        write_typed(&dir.path().join(shard(1)), a, Dtype::F32);
        write_typed(&dir.path().join(shard(2)), b, Dtype::BF16);
        let mut map: BTreeMap<String, String> = a.iter().map(|(n, _)| ((*n).clone(), shard(1))).collect();
        map.extend(b.iter().map(|(n, _)| ((*n).clone(), shard(2))));
        let index = |map: &BTreeMap<String, String>| serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map}).to_string();
        std::fs::write(dir.path().join("model.safetensors.index.json"), index(&map)).unwrap();
        assert_eq!(load(dir.path()).unwrap().tensors, ckpt.tensors);

        // An index that names a tensor no shard has.
        let mut bad = map.clone();
        bad.insert("model.layers.9.mlp.up_proj.weight".into(), shard(2));
        std::fs::write(dir.path().join("model.safetensors.index.json"), index(&bad)).unwrap();
        let e = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(e.contains("`model.layers.9.mlp.up_proj.weight` is listed in the index"), "{e}");

        // An index that puts a tensor in the wrong shard.
        let mut bad = map.clone();
        let moved = a[0].0.clone();
        bad.insert(moved.clone(), shard(2));
        std::fs::write(dir.path().join("model.safetensors.index.json"), index(&bad)).unwrap();
        let e = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(e.contains(&format!("`{moved}`")) && e.contains("index puts it in"), "{e}");

        // A shard path outside the directory.
        let mut bad = map;
        bad.insert(moved, "../x.safetensors".into());
        std::fs::write(dir.path().join("model.safetensors.index.json"), index(&bad)).unwrap();
        let e = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(e.contains("not a file name"), "{e}");
    }

    #[test]
    fn safetensors_errors_name_file_and_tensor() {
        let ckpt = tiny_checkpoint(tiny_config("llama", true));
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &ckpt.config);
        let file = dir.path().join("model.safetensors");

        let mut list: Vec<_> = ckpt.tensors.iter().filter(|(n, _)| *n != "model.layers.1.mlp.up_proj.weight").collect();
        write_typed(&file, &list, Dtype::F32);
        let e = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(e.contains("model.layers.1.mlp.up_proj.weight: missing") && e.contains(&dir.path().display().to_string()), "{e}");

        let foo_name = "foo".to_string();
        let foo = HostTensor { shape: vec![2], data: vec![1.0, 2.0] };
        list = ckpt.tensors.iter().collect();
        list.push((&foo_name, &foo));
        write_typed(&file, &list, Dtype::F32);
        let e = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(e.contains("unexpected tensor `foo`"), "{e}");

        let wrong = HostTensor { shape: vec![11, 4], data: vec![0.0; 44] };
        let emb = "model.embed_tokens.weight".to_string();
        list = ckpt.tensors.iter().filter(|(n, _)| **n != emb).collect();
        list.push((&emb, &wrong));
        write_typed(&file, &list, Dtype::F32);
        let e = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(e.contains("model.embed_tokens.weight: shape [11, 4], expected [11, 8]"), "{e}");

        write_typed(&file, &[(&foo_name, &foo)], Dtype::I32);
        let e = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(e.contains("tensor `foo` has dtype I32") && e.contains("model.safetensors"), "{e}");

        // A tied lm_head that is a copy of the embeddings is dropped; one that differs is an error.
        let head = "lm_head.weight".to_string();
        let mut list: Vec<_> = ckpt.tensors.iter().collect();
        list.push((&head, &ckpt.tensors[&emb]));
        write_typed(&file, &list, Dtype::F32);
        assert_eq!(load(dir.path()).unwrap().tensors, ckpt.tensors);
        list.pop();
        list.push((&head, &wrong));
        write_typed(&file, &list, Dtype::F32);
        let e = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(e.contains("lm_head.weight differs"), "{e}");

        std::fs::remove_file(dir.path().join("config.json")).unwrap();
        let e = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(e.contains("config.json"), "{e}");
        let e = format!("{:#}", load(dir.path().join("nope")).unwrap_err());
        assert!(e.contains("no such file"), "{e}");
    }

    // ----- synthetic GGUF files -----

    /// What llama.cpp's converter would write for `ckpt`: renamed, Q/K permuted for llama.
    fn gguf_of(ckpt: &Checkpoint) -> GgufWriter {
        let c = &ckpt.config;
        let arch = c.model_type.as_str();
        let mut w = GgufWriter::new();
        w.kv("general.architecture", Value::str(arch));
        w.kv(&format!("{arch}.block_count"), Value::U32(c.num_hidden_layers as u32));
        w.kv(&format!("{arch}.embedding_length"), Value::U32(c.hidden_size as u32));
        w.kv(&format!("{arch}.feed_forward_length"), Value::U32(c.intermediate_size as u32));
        w.kv(&format!("{arch}.attention.head_count"), Value::U32(c.num_attention_heads as u32));
        w.kv(&format!("{arch}.attention.head_count_kv"), Value::U32(c.num_key_value_heads as u32));
        w.kv(&format!("{arch}.context_length"), Value::U32(c.max_position_embeddings as u32));
        w.kv(&format!("{arch}.rope.freq_base"), Value::F32(c.rope_theta as f32));
        w.kv(&format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(c.rms_norm_eps as f32));
        w.kv("tokenizer.ggml.tokens", Value::strings((0..c.vocab_size).map(|i| format!("t{i}"))));
        w.kv("tokenizer.ggml.bos_token_id", Value::U32(1));
        w.kv("tokenizer.ggml.eos_token_id", Value::U32(2));
        let gguf_name = |hf: &str| -> String {
            let fixed = [
                ("model.embed_tokens.weight", "token_embd.weight"),
                ("lm_head.weight", "output.weight"),
                ("model.norm.weight", "output_norm.weight"),
            ];
            if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
                return g.to_string();
            }
            let rest = hf.strip_prefix("model.layers.").unwrap();
            let (layer, rest) = rest.split_once('.').unwrap();
            let (part, kind) = rest.rsplit_once('.').unwrap();
            let g = match part {
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "self_attn.q_norm" => "attn_q_norm",
                "self_attn.k_norm" => "attn_k_norm",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                "input_layernorm" => "attn_norm",
                "post_attention_layernorm" => "ffn_norm",
                p => panic!("{p}"),
            };
            format!("blk.{layer}.{g}.{kind}")
        };
        for (name, t) in &ckpt.tensors {
            let t = if arch == "llama" && name.contains(".q_proj.") {
                permute_for_gguf(t, c.num_attention_heads).unwrap()
            } else if arch == "llama" && name.contains(".k_proj.") {
                permute_for_gguf(t, c.num_key_value_heads).unwrap()
            } else {
                t.clone()
            };
            w.f32_tensor(&gguf_name(name), &t.shape, &t.data);
        }
        w
    }

    #[test]
    fn synthetic_gguf_loads_in_hf_layout() {
        for (arch, tied) in [("llama", true), ("llama", false), ("qwen2", true), ("qwen3", true), ("qwen3", false)] {
            let mut ckpt = tiny_checkpoint(tiny_config(arch, tied));
            // Every value distinct, so a wrong row order cannot go unnoticed.
            for (k, t) in ckpt.tensors.values_mut().enumerate() {
                t.data.iter_mut().enumerate().for_each(|(i, x)| *x = (k * 1000 + i) as f32);
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.gguf");
            gguf_of(&ckpt).write(&path).unwrap();
            let back = load(&path).unwrap();
            assert_eq!(back.config.model_type.as_str(), arch);
            assert_eq!(back.config.tie_word_embeddings, tied);
            assert_eq!(back.config.rms_norm_eps, 1e-6);
            assert_eq!(back.config.rope_theta, 500000.0);
            assert_eq!(back.config.qkv_bias(), arch == "qwen2");
            assert_eq!(back.config.qk_norm(), arch == "qwen3");
            assert_eq!((back.config.bos_token_id, back.config.eos_token_ids()), (Some(1), vec![2]));
            for (name, t) in &ckpt.tensors {
                assert_eq!(&back.tensors[name], t, "{arch}: {name}");
            }
            assert_eq!(back.tensors.len(), ckpt.tensors.len());
        }
    }

    #[test]
    fn gguf_errors_name_the_tensor() {
        let ckpt = tiny_checkpoint(tiny_config("llama", true));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");

        let mut w = gguf_of(&ckpt);
        w.f32_tensor("blk.0.attn_qkv.weight", &[2], &[0.0; 2]);
        w.write(&path).unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains("tensor `blk.0.attn_qkv.weight` has no Hugging Face counterpart"), "{e}");

        // rope_freqs goes into the config, not the weights: all ones is plain RoPE, a llama3
        // pattern is llama3 scaling (head_dim 4: one kept frequency, one divided by 8).
        for (factors, scaled) in [([1.0f32, 1.0], false), ([1.0, 8.0], true)] {
            let mut w = gguf_of(&ckpt);
            w.f32_tensor("rope_freqs.weight", &[2], &factors);
            w.write(&path).unwrap();
            let back = load(&path).unwrap();
            assert_eq!(back.tensors, ckpt.tensors);
            let plain = ckpt.config.rope_inv_freq().unwrap();
            let got = back.config.rope_inv_freq().unwrap();
            assert_eq!(back.config.extra.contains_key("rope_scaling"), scaled);
            for (j, (g, p)) in got.iter().zip(&plain).enumerate() {
                assert!((g * factors[j] as f64 - p).abs() <= 1e-6 * p, "frequency {j}: {g} vs {p} / {}", factors[j]);
            }
        }
        let mut w = gguf_of(&ckpt);
        w.f32_tensor("rope_freqs.weight", &[1], &[2.0]);
        w.write(&path).unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains("tensor `rope_freqs.weight`: 1 rotary factors for head_dim 4"), "{e}");

        let mut w = gguf_of(&ckpt);
        let t = w.tensors.iter_mut().find(|t| t.name == "blk.1.ffn_up.weight").unwrap();
        // Q8_K (llama.cpp's intermediate type, never a weight): 292 bytes per 256 values; 12 x 8
        // = 96 values is not a whole block, so make it one.
        t.dims = vec![256];
        t.ggml_type = 15;
        t.bytes = vec![0; 292];
        w.write(&path).unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains("tensor `blk.1.ffn_up.weight` has ggml type 15 (Q8_K)") && e.contains("Q6_K"), "{e}");

        let mut w = gguf_of(&ckpt);
        w.tensors.retain(|t| t.name != "blk.1.ffn_down.weight");
        w.write(&path).unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains("model.layers.1.mlp.down_proj.weight: missing") && e.contains("m.gguf"), "{e}");

        let mut w = GgufWriter::new();
        w.kv("general.architecture", Value::str("gemma"));
        w.write(&path).unwrap();
        let e = format!("{:#}", load(&path).unwrap_err());
        assert!(e.contains("architecture `gemma`"), "{e}");
    }

    // ----- the real test model -----

    fn test_model_path() -> PathBuf {
        crate::test_model_path()
    }

    /// Loaded once: the tests below share ~540 MB of f32 weights.
    fn smollm2() -> &'static Checkpoint {
        static CKPT: OnceLock<Checkpoint> = OnceLock::new();
        CKPT.get_or_init(|| load(test_model_path()).unwrap())
    }

    #[test]
    fn smollm2_config_and_tensors() {
        let ck = smollm2();
        let c = &ck.config;
        assert_eq!(c.model_type, ModelType::Llama);
        assert_eq!(c.architectures, vec!["LlamaForCausalLM"]);
        assert_eq!((c.num_hidden_layers, c.hidden_size, c.intermediate_size), (30, 576, 1536));
        assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim()), (9, 3, 64));
        assert_eq!((c.rope_theta, c.rms_norm_eps), (100000.0, 1e-5));
        assert!(c.tie_word_embeddings && !c.qkv_bias());
        assert_eq!(c.vocab_size, 49152);
        assert_eq!((c.bos_token_id, c.eos_token_ids()), (Some(1), vec![2]));
        for (name, shape) in expected_tensors(c) {
            assert_eq!(ck.tensors[&name].shape, shape, "{name}");
        }
        assert_eq!(ck.tensors.len(), 272);
        assert!(!ck.tensors.contains_key("lm_head.weight"));
        ck.validate().unwrap();
        let n = ck.n_params();
        assert!((134_000_000..136_000_000).contains(&n), "{n} parameters");
    }

    #[test]
    fn smollm2_values_are_plausible() {
        let ck = smollm2();
        let emb = &ck.tensors["model.embed_tokens.weight"];
        let row = |r: usize| &emb.data[r * 576..(r + 1) * 576];
        for r in [0, 1, 2, 1000, 49151] {
            let x = row(r);
            assert!(x.iter().all(|v| v.is_finite()), "row {r}");
            assert!(x.iter().any(|&v| v != x[0]), "row {r} is constant");
        }
        assert_ne!(row(1000), row(1001));
        for t in ck.tensors.values() {
            assert!(t.data.iter().all(|v| v.is_finite()));
        }
        // RMSNorm gains are around 1, unlike quantised matrix weights.
        let norm = &ck.tensors["model.norm.weight"].data;
        let mean = norm.iter().sum::<f32>() / norm.len() as f32;
        assert!(mean > 0.1 && mean < 10.0, "final norm mean {mean}");
    }

    #[test]
    fn smollm2_save_hf_round_trips_bit_exactly() {
        let ck = smollm2();
        let dir = tempfile::tempdir().unwrap();
        save_hf(dir.path(), ck).unwrap();
        let back = load_safetensors(dir.path()).unwrap();
        assert_eq!(back.config, ck.config);
        assert_eq!(back.tensors.len(), ck.tensors.len());
        for (name, t) in &ck.tensors {
            let b = &back.tensors[name];
            assert_eq!(b.shape, t.shape, "{name}");
            assert!(b.data.iter().zip(&t.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} differs");
        }
    }
}
