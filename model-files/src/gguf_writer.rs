//! A writer for GGUF v3 files: metadata as [`Value`]s and tensors as their on-disk bytes, in the
//! order given. The tests build files with it the way llama.cpp's converter writes them (a Qwen2
//! vocabulary, a checkpoint in GGUF names and layout), so they depend on no downloaded model; the
//! reader in [`crate::gguf`] is the one that must accept them.

use crate::gguf::{GgmlType, Value};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// `general.alignment` when a file does not set it; as in ggml.
const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor to write: `dims` in ggml's order (fastest-varying first, the reverse of a row-major
/// shape) and `bytes` already in `ggml_type`'s encoding.
#[derive(Debug, Clone)]
pub struct GgufTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<GgufTensor>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn kv(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// An f32 tensor from a row-major `shape` and its values.
    pub fn f32_tensor(&mut self, name: &str, shape: &[usize], data: &[f32]) -> &mut Self {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "tensor `{name}`: shape {shape:?} vs {} values", data.len());
        self.tensors.push(GgufTensor {
            name: name.to_string(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type: 0,
            bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        });
        self
    }

    fn alignment(&self) -> u64 {
        self.metadata.iter().find(|(k, _)| k == "general.alignment").and_then(|(_, v)| v.as_i128()).map_or(DEFAULT_ALIGNMENT, |a| a as u64)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment() as usize;
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut b, key);
            b.extend(value_type(value).to_le_bytes());
            put_value(&mut b, value);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut b, &t.name);
            b.extend((t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
            b.extend(t.ggml_type.to_le_bytes());
            b.extend((offset as u64).to_le_bytes());
            offset += t.bytes.len().div_ceil(align) * align;
        }
        for t in &self.tensors {
            b.resize(b.len().div_ceil(align) * align, 0);
            b.extend(&t.bytes);
        }
        b
    }

    /// Writes the file atomically (a temporary file next to it, then a rename). Fails when a
    /// tensor's rows are not whole blocks of its type or its bytes do not match its dimensions.
    pub fn write(&self, path: &Path) -> Result<()> {
        for t in &self.tensors {
            let n: u64 = t.dims.iter().product();
            let Some(kind) = GgmlType::from_id(t.ggml_type) else { bail!("tensor `{}`: unknown ggml type {}", t.name, t.ggml_type) };
            let (block_bytes, block_elems) = kind.block();
            // ggml quantises each row on its own, so a row is whole blocks (the reader refuses
            // anything else); `to_bytes` alone can still build such a file for the reader's tests.
            let row = t.dims.first().copied().unwrap_or(1);
            if !row.is_multiple_of(block_elems as u64) {
                bail!("tensor `{}`: rows of {row} values are not whole {} blocks of {block_elems}", t.name, kind.name());
            }
            if !n.is_multiple_of(block_elems as u64) || t.bytes.len() as u64 != n / block_elems as u64 * block_bytes as u64 {
                bail!("tensor `{}`: {} bytes do not hold {n} values of {}", t.name, t.bytes.len(), kind.name());
            }
        }
        let tmp = path.with_extension("gguf.tmp");
        std::fs::write(&tmp, self.to_bytes()).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

/// GGUF's id of a value type; the reader's `Reader::value` reads the same numbers.
fn value_type(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.push(*x as u8),
        Value::U16(x) => b.extend(x.to_le_bytes()),
        Value::I16(x) => b.extend(x.to_le_bytes()),
        Value::U32(x) => b.extend(x.to_le_bytes()),
        Value::I32(x) => b.extend(x.to_le_bytes()),
        Value::U64(x) => b.extend(x.to_le_bytes()),
        Value::I64(x) => b.extend(x.to_le_bytes()),
        Value::F32(x) => b.extend(x.to_le_bytes()),
        Value::F64(x) => b.extend(x.to_le_bytes()),
        Value::Bool(x) => b.push(*x as u8),
        Value::String(s) => put_str(b, s),
        Value::Array(items) => {
            // An empty array is written as an array of strings, as gguf-py does.
            let ty = items.first().map_or(8, value_type);
            assert!(items.iter().all(|i| value_type(i) == ty), "GGUF arrays hold one type");
            b.extend(ty.to_le_bytes());
            b.extend((items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| put_value(b, i));
        }
    }
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::String(s.to_string())
    }

    pub fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Value {
        Value::Array(items.into_iter().map(|s| Value::String(s.as_ref().to_string())).collect())
    }

    pub fn i32s(items: impl IntoIterator<Item = i32>) -> Value {
        Value::Array(items.into_iter().map(Value::I32).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Gguf;

    #[test]
    fn round_trips_through_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.gguf");
        let mut w = GgufWriter::new();
        w.kv("general.alignment", Value::U32(64))
            .kv("s", Value::str("héllo"))
            .kv("a", Value::strings(["x", "y z"]))
            .kv("i", Value::i32s([3, -4]))
            .kv("f", Value::F64(2.25))
            .kv("b", Value::Bool(true))
            .f32_tensor("t", &[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
            .f32_tensor("u", &[1], &[7.0]);
        w.write(&path).unwrap();
        let g = Gguf::open(&path).unwrap();
        assert_eq!(g.get_str("s").unwrap(), "héllo");
        assert_eq!(g.get_str_array("a").unwrap(), vec!["x", "y z"]);
        assert_eq!(g.get_i32_array("i").unwrap(), vec![3, -4]);
        assert_eq!(g.get("f"), Some(&Value::F64(2.25)));
        assert_eq!(g.get("b"), Some(&Value::Bool(true)));
        assert_eq!(g.data_offset % 64, 0);
        assert_eq!(g.tensors[0].dims, vec![3, 2]);
        assert_eq!(g.tensors[1].offset, 64);
        let u = g.tensor_bytes(&g.tensors[1]).unwrap();
        assert_eq!(u, 7f32.to_le_bytes());

        w.tensors[1].bytes.pop();
        let e = w.write(&path).unwrap_err().to_string();
        assert!(e.contains("tensor `u`: 3 bytes do not hold 1 values of F32"), "{e}");

        // 2 rows of 16 Q8_0 weights: 34 bytes are one block's worth in total, but no row is a
        // whole block, so ggml could not have written it and the reader would refuse it.
        w.tensors[1] = GgufTensor { name: "q".into(), dims: vec![16, 2], ggml_type: 8, bytes: vec![0; 34] };
        let e = w.write(&path).unwrap_err().to_string();
        assert!(e.contains("tensor `q`: rows of 16 values are not whole Q8_0 blocks of 32"), "{e}");
        w.tensors[1].dims = vec![32, 1];
        w.write(&path).unwrap();
        Gguf::open(&path).unwrap();
    }
}
