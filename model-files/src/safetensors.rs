//! safetensors files: read any F32 / F16 / BF16 file (or a Hugging Face shard set with its
//! index) into f32 host tensors, and write f32 files atomically.

use crate::checkpoint::HostTensor;
use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Hugging Face checkpoint entries that are not weights: older Llama checkpoints saved RoPE's
/// inverse frequencies, which the model recomputes from `rope_theta`.
pub(crate) fn ignorable_safetensors_name(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
}

fn to_host(name: &str, view: &safetensors::tensor::TensorView<'_>) -> Result<HostTensor> {
    let b = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        d => bail!("tensor `{name}` has dtype {d:?} (supported: F32, F16, BF16)"),
    };
    HostTensor::new(view.shape().to_vec(), data).with_context(|| format!("tensor `{name}`"))
}

/// The tensors of one safetensors file, converted to f32 in parallel; errors name the file.
pub(crate) fn read_shard(file: &Path) -> Result<Vec<(String, HostTensor)>> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow!("{}: not a readable safetensors file: {e}", file.display()))?;
    st.tensors()
        .into_par_iter()
        .map(|(name, view)| -> Result<(String, HostTensor)> {
            let t = to_host(&name, &view).with_context(|| file.display().to_string())?;
            Ok((name, t))
        })
        .collect()
}

/// Shard file names from a `model.safetensors.index.json`, and which shard holds each tensor.
pub(crate) fn read_index(index: &Path) -> Result<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).with_context(|| format!("cannot read {}", index.display()))?;
    let idx: Index = serde_json::from_str(&text).with_context(|| format!("{}: not a safetensors index", index.display()))?;
    for (tensor, file) in &idx.weight_map {
        // Shards live beside the index; a path here would read files outside the model.
        let p = Path::new(file);
        if p.components().count() != 1 || !matches!(p.components().next(), Some(std::path::Component::Normal(_))) {
            bail!("{}: tensor `{tensor}` is mapped to `{file}`, which is not a file name", index.display());
        }
    }
    Ok(idx.weight_map)
}

/// Borrowed f32 tensor in the form `safetensors::serialize` wants; bytes are produced one tensor
/// at a time while the file is written, so saving never holds a second copy of the model.
struct F32View<'a>(&'a HostTensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.0.data.len() * 4
    }
}

/// Write `tensors` as one f32 safetensors file with metadata `{"format": "pt"}`, under a
/// temporary name beside `path` and renamed into place, so a crash never leaves a half-written
/// file under the real name. (safetensors 0.7 serialises only to a path, not to a writer, so this
/// cannot go through `schemas::write_atomic_with`; buffering the file in memory would hold a
/// second copy of the model.)
pub fn write_safetensors(path: impl AsRef<Path>, tensors: &BTreeMap<String, HostTensor>) -> Result<()> {
    let path = path.as_ref();
    for (name, t) in tensors {
        if t.data.len() != t.shape.iter().product::<usize>() {
            bail!("{}: tensor `{name}` has {} values for shape {:?}", path.display(), t.data.len(), t.shape);
        }
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("tensors.safetensors");
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let views = tensors.iter().map(|(name, t)| (name.as_str(), F32View(t)));
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let written = safetensors::serialize_to_file(views, Some(metadata), &tmp)
        .map_err(|e| anyhow!("cannot write {}: {e}", tmp.display()))
        .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {}", tmp.display())))
        .and_then(|()| std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display())));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Every tensor of one safetensors file, as f32 (F32, F16 and BF16 are accepted).
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, HostTensor>> {
    let path = path.as_ref();
    let mut out = BTreeMap::new();
    for (name, t) in read_shard(path)? {
        out.insert(name, t);
    }
    Ok(out)
}
