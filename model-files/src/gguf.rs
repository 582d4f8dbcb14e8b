//! A reader for GGUF (v2/v3) model files: the metadata key/values and the tensor directory, and
//! the one table of ggml tensor types with the dequantisation of those this crate reads.
//!
//! Only the header is read; tensor data is left on disk until someone asks for one tensor with
//! [`Gguf::tensor_bytes`]. Every length in the header is checked against the bytes that are
//! actually left in the file, so a corrupt or truncated file is an error, never a huge allocation.
//!
//! Layout (all little-endian): magic `GGUF`, u32 version, u64 tensor count, u64 metadata count,
//! the metadata key/values, the tensor infos, padding up to `general.alignment`, tensor data.

use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
/// The tensor in which llama.cpp's converter stores Llama 3.1-style RoPE scaling as per-frequency
/// divisors (read into the config's `rope_scaling`, see [`crate::config`]).
pub const ROPE_FREQS_TENSOR: &str = "rope_freqs.weight";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS: a tensor with more dimensions than this is a corrupt header.
const MAX_DIMS: u32 = 4;
/// Nested arrays are legal but nothing real nests deeply; the cap keeps a crafted file from
/// overflowing the stack.
const MAX_ARRAY_DEPTH: usize = 8;

/// One metadata value, with every type GGUF defines.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }

    /// Any integer type, widened; `None` for non-integers.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v as i128,
            Value::I8(v) => v as i128,
            Value::U16(v) => v as i128,
            Value::I16(v) => v as i128,
            Value::U32(v) => v as i128,
            Value::I32(v) => v as i128,
            Value::U64(v) => v as i128,
            Value::I64(v) => v as i128,
            _ => return None,
        })
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Fastest-varying dimension first (ggml's ne0, ne1, ...).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Relative to [`Gguf::data_offset`].
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Bytes the tensor occupies on disk; `None` for a ggml type this reader does not know, or
    /// for rows that are not whole blocks (see [`Self::row_len`]).
    pub fn n_bytes(&self) -> Option<u64> {
        let (block_bytes, block_elems) = GgmlType::from_id(self.ggml_type)?.block();
        if !self.row_len().is_multiple_of(block_elems as u64) {
            return None;
        }
        (self.n_elements() / block_elems as u64).checked_mul(block_bytes as u64)
    }

    /// Elements per row: the first (innermost) dimension. ggml quantises row by row, so a row
    /// must be a whole number of blocks.
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
}

/// A ggml tensor type. [`GgmlType::TABLE`] is the one list of the types llama.cpp's
/// quantisations use, with their id in the file (ggml.h's `enum ggml_type`), name and block
/// geometry; [`GgmlType::kernel`] says which of them this crate can dequantise, and how. The
/// IQ*, TQ* and MXFP4 types are listed, without a kernel, so that a file using them is refused by
/// name. Types ggml has retired (Q4_2, Q4_3, Q4_0_4_4 ...) are not listed: a file using one is
/// reported by its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// Dequantises one block: bytes in, `elements` values out.
type Kernel = fn(&[u8], &mut [f32]);

impl GgmlType {
    /// `(type, id in the file, name, bytes per block, elements per block)`; sizes as gguf-py's
    /// GGML_QUANT_SIZES.
    pub const TABLE: [(GgmlType, u32, &'static str, usize, usize); 32] = [
        (GgmlType::F32, 0, "F32", 4, 1),
        (GgmlType::F16, 1, "F16", 2, 1),
        (GgmlType::Q4_0, 2, "Q4_0", 18, 32),
        (GgmlType::Q4_1, 3, "Q4_1", 20, 32),
        (GgmlType::Q5_0, 6, "Q5_0", 22, 32),
        (GgmlType::Q5_1, 7, "Q5_1", 24, 32),
        (GgmlType::Q8_0, 8, "Q8_0", 34, 32),
        (GgmlType::Q8_1, 9, "Q8_1", 36, 32),
        (GgmlType::Q2_K, 10, "Q2_K", 84, 256),
        (GgmlType::Q3_K, 11, "Q3_K", 110, 256),
        (GgmlType::Q4_K, 12, "Q4_K", 144, 256),
        (GgmlType::Q5_K, 13, "Q5_K", 176, 256),
        (GgmlType::Q6_K, 14, "Q6_K", 210, 256),
        (GgmlType::Q8_K, 15, "Q8_K", 292, 256),
        (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 66, 256),
        (GgmlType::IQ2_XS, 17, "IQ2_XS", 74, 256),
        (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 98, 256),
        (GgmlType::IQ1_S, 19, "IQ1_S", 50, 256),
        (GgmlType::IQ4_NL, 20, "IQ4_NL", 18, 32),
        (GgmlType::IQ3_S, 21, "IQ3_S", 110, 256),
        (GgmlType::IQ2_S, 22, "IQ2_S", 82, 256),
        (GgmlType::IQ4_XS, 23, "IQ4_XS", 136, 256),
        (GgmlType::I8, 24, "I8", 1, 1),
        (GgmlType::I16, 25, "I16", 2, 1),
        (GgmlType::I32, 26, "I32", 4, 1),
        (GgmlType::I64, 27, "I64", 8, 1),
        (GgmlType::F64, 28, "F64", 8, 1),
        (GgmlType::IQ1_M, 29, "IQ1_M", 56, 256),
        (GgmlType::BF16, 30, "BF16", 2, 1),
        (GgmlType::TQ1_0, 34, "TQ1_0", 54, 256),
        (GgmlType::TQ2_0, 35, "TQ2_0", 66, 256),
        (GgmlType::MXFP4, 39, "MXFP4", 17, 32),
    ];

    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        Self::TABLE.iter().find(|r| r.0 == self).expect("every type is in the table")
    }

    /// The type with this id in a GGUF file; `None` for ids this reader does not know.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Self::TABLE.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// `(bytes per block, elements per block)`.
    pub fn block(self) -> (usize, usize) {
        let r = self.row();
        (r.3, r.4)
    }

    /// How to dequantise one block, for the types this crate reads; `None` for the others.
    fn kernel(self) -> Option<Kernel> {
        Some(match self {
            GgmlType::F32 => |b, o| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            GgmlType::F16 => |b, o| o[0] = f16_at(b, 0),
            GgmlType::BF16 => |b, o| o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            // Q4_0: f16 scale, then 16 bytes whose low nibbles are weights 0..16 and high nibbles
            // weights 16..32, offset by 8.
            GgmlType::Q4_0 => |b, o| {
                let d = f16_at(b, 0);
                for (j, &q) in b[2..18].iter().enumerate() {
                    o[j] = ((q & 0xF) as i32 - 8) as f32 * d;
                    o[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
                }
            },
            // Q4_1: f16 scale and f16 minimum, then nibbles as in Q4_0 but unsigned.
            GgmlType::Q4_1 => |b, o| {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                for (j, &q) in b[4..20].iter().enumerate() {
                    o[j] = (q & 0xF) as f32 * d + m;
                    o[j + 16] = (q >> 4) as f32 * d + m;
                }
            },
            // Q5_0: f16 scale, 32 fifth bits (bit j of a little-endian u32 for weight j), then
            // nibbles as in Q4_0; offset by 16.
            GgmlType::Q5_0 => |b, o| {
                let d = f16_at(b, 0);
                let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                for (j, &q) in b[6..22].iter().enumerate() {
                    let (lo, hi) = five_bit_pair(q, qh, j);
                    o[j] = (lo as i32 - 16) as f32 * d;
                    o[j + 16] = (hi as i32 - 16) as f32 * d;
                }
            },
            // Q5_1: f16 scale and minimum, then as Q5_0 but unsigned.
            GgmlType::Q5_1 => |b, o| {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                for (j, &q) in b[8..24].iter().enumerate() {
                    let (lo, hi) = five_bit_pair(q, qh, j);
                    o[j] = lo as f32 * d + m;
                    o[j + 16] = hi as f32 * d + m;
                }
            },
            // Q8_0: f16 scale, then 32 signed bytes.
            GgmlType::Q8_0 => |b, o| {
                let d = f16_at(b, 0);
                for (j, &q) in b[2..34].iter().enumerate() {
                    o[j] = q as i8 as f32 * d;
                }
            },
            GgmlType::Q2_K => dequant_q2_k,
            GgmlType::Q3_K => dequant_q3_k,
            GgmlType::Q4_K => dequant_q4_k,
            GgmlType::Q5_K => dequant_q5_k,
            GgmlType::Q6_K => dequant_q6_k,
            _ => return None,
        })
    }

    /// The types [`dequantize`] reads, in table order.
    pub fn dequantizable() -> impl Iterator<Item = GgmlType> {
        Self::TABLE.iter().map(|r| r.0).filter(|t| t.kernel().is_some())
    }
}

/// The name of a ggml type id as found in a file: ids ggml has retired are named as such (files
/// from before ARM's repacked types moved into llama.cpp's loader still carry 31 to 33), any
/// other id not in the table is `"unknown"`.
pub fn ggml_type_name(id: u32) -> &'static str {
    GgmlType::from_id(id).map_or_else(
        || match id {
            4 => "Q4_2, retired from ggml",
            5 => "Q4_3, retired from ggml",
            31 => "Q4_0_4_4, retired from ggml: re-quantise to Q4_0",
            32 => "Q4_0_4_8, retired from ggml: re-quantise to Q4_0",
            33 => "Q4_0_8_8, retired from ggml: re-quantise to Q4_0",
            36 => "IQ4_NL_4_4, retired from ggml",
            37 => "IQ4_NL_4_8, retired from ggml",
            38 => "IQ4_NL_8_8, retired from ggml",
            _ => "unknown",
        },
        GgmlType::name,
    )
}

/// The little-endian f16 at byte `i` of `b`, as f32 (block scales and minimums).
pub fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Weights `j` and `j + 16` of a Q5 block: nibbles of `q` with fifth bits `j` and `j + 16` of `qh`.
fn five_bit_pair(q: u8, qh: u32, j: usize) -> (u32, u32) {
    let lo = (q & 0xF) as u32 | ((qh >> j) & 1) << 4;
    let hi = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
    (lo, hi)
}

// The K-quants: 256 weights a block, in sub-blocks of 16 or 32 that each carry their own small
// scale (and minimum), themselves scaled by the block's f16 `d` (and `dmin`). Layouts are ggml's
// `block_q*_K` structs; the float operations are ggml's, in its order.

/// Q2_K: 16 bytes of (4-bit scale | 4-bit minimum << 4) per 16 weights, 64 bytes of 2-bit
/// weights, then f16 `d` and `dmin`. Each 32-byte half of the weights holds 128 weights as four
/// 2-bit planes of 32.
fn dequant_q2_k(b: &[u8], o: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for plane in 0..4 {
            for sub in 0..2 {
                let sc = scales[half * 8 + plane * 2 + sub];
                let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
                let out = &mut o[half * 128 + plane * 32 + sub * 16..][..16];
                for (l, y) in out.iter_mut().enumerate() {
                    *y = dl * ((q[sub * 16 + l] >> (2 * plane)) & 3) as f32 - ml;
                }
            }
        }
    }
}

/// Q3_K: 32 bytes of high bits (bit `k` of byte `l` for plane `k`), 64 bytes of low 2-bit
/// weights laid out as Q2_K's, 12 bytes packing sixteen 6-bit scales (offset by 32), f16 `d`.
/// A weight is its low two bits, minus 4 when its high bit is clear.
fn dequant_q3_k(b: &[u8], o: &mut [f32]) {
    let (hmask, qs, packed) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    // Scale i: low 4 bits from byte i % 8 (low nibble for i < 8, high for i >= 8), high 2 bits
    // from byte 8 + i % 4, bit pair i / 4.
    let scale = |i: usize| -> i32 {
        let low = (packed[i % 8] >> (4 * (i / 8))) & 0xF;
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        (low | high << 4) as i32 - 32
    };
    for half in 0..2 {
        let q = &qs[half * 32..half * 32 + 32];
        for plane in 0..4 {
            let bit = 1u8 << (half * 4 + plane);
            for sub in 0..2 {
                let dl = d * scale(half * 8 + plane * 2 + sub) as f32;
                let out = &mut o[half * 128 + plane * 32 + sub * 16..][..16];
                for (l, y) in out.iter_mut().enumerate() {
                    let i = sub * 16 + l;
                    let low = ((q[i] >> (2 * plane)) & 3) as i32;
                    *y = dl * (low - if hmask[i] & bit != 0 { 0 } else { 4 }) as f32;
                }
            }
        }
    }
}

/// Scale and minimum `j` (0..8) of a Q4_K / Q5_K block's 12 packed bytes: 6 bits each, the first
/// four whole in bytes 0..8, the last four split over a nibble of bytes 8..12 and the top two
/// bits of bytes 0..8.
fn scale_min_k4(packed: &[u8], j: usize) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        ((packed[j + 4] & 0xF) | (packed[j - 4] >> 6) << 4, (packed[j + 4] >> 4) | (packed[j] >> 6) << 4)
    };
    (sc as f32, m as f32)
}

/// Q4_K: f16 `d` and `dmin`, 12 bytes of 6-bit scales and minima for eight sub-blocks of 32, 128
/// bytes of nibbles: each 32 bytes hold two sub-blocks, low nibbles first.
fn dequant_q4_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (packed, qs) = (&b[4..16], &b[16..144]);
    for pair in 0..4 {
        let q = &qs[pair * 32..pair * 32 + 32];
        for nibble in 0..2 {
            let (sc, m) = scale_min_k4(packed, pair * 2 + nibble);
            let (dl, ml) = (d * sc, dmin * m);
            for (l, y) in o[pair * 64 + nibble * 32..][..32].iter_mut().enumerate() {
                *y = dl * ((q[l] >> (4 * nibble)) & 0xF) as f32 - ml;
            }
        }
    }
}

/// Q5_K: Q4_K's layout with 32 bytes of fifth bits after the scales (bit `s` of byte `l` for
/// sub-block `s`).
fn dequant_q5_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (packed, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for pair in 0..4 {
        let q = &qs[pair * 32..pair * 32 + 32];
        for nibble in 0..2 {
            let sub = pair * 2 + nibble;
            let (sc, m) = scale_min_k4(packed, sub);
            let (dl, ml) = (d * sc, dmin * m);
            for (l, y) in o[sub * 32..][..32].iter_mut().enumerate() {
                let fifth = if qh[l] >> sub & 1 != 0 { 16 } else { 0 };
                *y = dl * (((q[l] >> (4 * nibble)) & 0xF) + fifth) as f32 - ml;
            }
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, sixteen signed 8-bit scales
/// (one per 16 weights), f16 `d`. Each half of 128 weights takes 64 low bytes and 32 high bytes:
/// weight `l + 32 k` (k = 0..4) is nibble `k / 2` of low byte `l + 32 (k % 2)` with bit pair `k`
/// of high byte `l`, offset by 32.
fn dequant_q6_k(b: &[u8], o: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for half in 0..2 {
        let (ql, qh) = (&ql[half * 64..half * 64 + 64], &qh[half * 32..half * 32 + 32]);
        for l in 0..32 {
            for k in 0..4 {
                let low = (ql[l + 32 * (k % 2)] >> (4 * (k / 2))) & 0xF;
                let q = (low | ((qh[l] >> (2 * k)) & 3) << 4) as i32 - 32;
                let sc = scales[half * 8 + l / 16 + 2 * k] as i8 as f32;
                o[half * 128 + 32 * k + l] = d * sc * q as f32;
            }
        }
    }
}

/// Elements per rayon task when dequantising; a multiple of every block size.
const DEQUANT_CHUNK: usize = 32 * 1024;

fn supported_list() -> String {
    GgmlType::dequantizable().map(GgmlType::name).collect::<Vec<_>>().join(", ")
}

/// Why [`dequantize`] cannot read tensors of type id `ggml_type`, or `None` when it can.
pub fn not_dequantizable(ggml_type: u32) -> Option<String> {
    match GgmlType::from_id(ggml_type).and_then(GgmlType::kernel) {
        Some(_) => None,
        None => Some(format!(
            "ggml type {ggml_type} ({}), which cannot be dequantised (supported: {})",
            ggml_type_name(ggml_type),
            supported_list()
        )),
    }
}

/// Dequantise `n` values of ggml type id `ggml_type` from their on-disk bytes.
pub fn dequantize(ggml_type: u32, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    if let Some(why) = not_dequantizable(ggml_type) {
        bail!("{why}");
    }
    let kind = GgmlType::from_id(ggml_type).expect("known type");
    let kernel = kind.kernel().expect("has a kernel");
    let (block_bytes, block_elems) = kind.block();
    if !n.is_multiple_of(block_elems) || bytes.len() != n / block_elems * block_bytes {
        bail!("{} bytes of {} do not hold {n} values ({block_bytes} bytes per {block_elems})", bytes.len(), ggml_type_name(ggml_type));
    }
    let mut out = vec![0f32; n];
    let in_chunk = DEQUANT_CHUNK / block_elems * block_bytes;
    out.par_chunks_mut(DEQUANT_CHUNK).zip(bytes.par_chunks(in_chunk)).for_each(|(out, bytes)| {
        for (o, b) in out.chunks_exact_mut(block_elems).zip(bytes.chunks_exact(block_bytes)) {
            kernel(b, o);
        }
    });
    Ok(out)
}

/// A GGUF file's header.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute file offset where tensor data starts.
    pub data_offset: u64,
    path: PathBuf,
}

/// Buffered reader that knows its position and how many bytes the file has left, so every
/// length field can be checked before anything is allocated for it.
struct Reader {
    r: BufReader<File>,
    pos: u64,
    len: u64,
}

impl Reader {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).with_context(|| format!("unexpected end of file at byte {}", self.pos))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    /// A count of items each at least `min_item_bytes` long; must fit in what is left of the file.
    fn count(&mut self, what: &str, min_item_bytes: u64) -> Result<u64> {
        let at = self.pos;
        let n = self.u64()?;
        if n.saturating_mul(min_item_bytes.max(1)) > self.remaining() {
            bail!("{what} count {n} at byte {at} exceeds the {} bytes left in the file", self.remaining());
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String> {
        let at = self.pos;
        let n = self.count("string length", 1)?;
        let mut buf = vec![0u8; n as usize];
        self.r.read_exact(&mut buf).with_context(|| format!("unexpected end of file in string at byte {at}"))?;
        self.pos += n;
        String::from_utf8(buf).map_err(|e| anyhow!("string at byte {at} is not UTF-8: {e}"))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.u8()?),
            1 => Value::I8(self.u8()? as i8),
            2 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            7 => match self.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => bail!("bool value {b} at byte {} is neither 0 nor 1", self.pos - 1),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    bail!("arrays nested deeper than {MAX_ARRAY_DEPTH} at byte {}", self.pos);
                }
                let elem_ty = self.u32()?;
                let n = self.count("array length", min_value_bytes(elem_ty)?)?;
                // Capacity is capped: the count is only bounded by the file size, and a file of
                // 1-byte elements would otherwise reserve 16x its size in `Value`s up front.
                let mut items = Vec::with_capacity((n as usize).min(1 << 16));
                for _ in 0..n {
                    items.push(self.value(elem_ty, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            t => bail!("unknown metadata value type {t} at byte {}", self.pos),
        })
    }
}

fn min_value_bytes(ty: u32) -> Result<u64> {
    Ok(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,  // length prefix
        9 => 12, // element type + length
        t => bail!("unknown array element type {t}"),
    })
}

impl Gguf {
    /// Read the header of `path`: metadata and tensor directory, not the tensor data.
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf> {
        let path = path.as_ref();
        Self::read_header(path).with_context(|| format!("{}: not a readable GGUF file", path.display()))
    }

    fn read_header(path: &Path) -> Result<Gguf> {
        let file = File::open(path).map_err(|e| anyhow!("cannot open: {e}"))?;
        let len = file.metadata()?.len();
        let mut r = Reader { r: BufReader::with_capacity(1 << 20, file), pos: 0, len };

        let magic = r.bytes::<4>().context("file too short for a GGUF header")?;
        if &magic != MAGIC {
            bail!("bad magic {:?}, expected \"GGUF\"", String::from_utf8_lossy(&magic));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            // GGUF has no byte-order flag: gguf-py's big-endian files keep the magic as bytes and
            // write everything after it big-endian, so the version reads as 3 << 24. ggml and
            // gguf-py recognise them by the low 16 bits being zero.
            if version != 0 && version & 0xFFFF == 0 {
                bail!(
                    "the file is big-endian (its version {version} is {} byte-swapped); only little-endian GGUF files are supported",
                    version.swap_bytes()
                );
            }
            bail!("GGUF version {version} is not supported (only 2 and 3)");
        }
        // Minimum on-disk size of a tensor info: name length, n_dims, type, offset.
        let n_tensors = r.count("tensor", 8 + 4 + 4 + 8)?;
        // Minimum size of a key/value: key length, value type, one byte of value.
        let n_kv = r.count("metadata", 8 + 4 + 1)?;

        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string().context("reading a metadata key")?;
            let ty = r.u32()?;
            let value = r.value(ty, 0).with_context(|| format!("reading metadata key `{key}`"))?;
            if metadata.insert(key.clone(), value).is_some() {
                bail!("metadata key `{key}` appears twice");
            }
        }

        let mut tensors = Vec::with_capacity((n_tensors as usize).min(1 << 16));
        for _ in 0..n_tensors {
            let name = r.string().context("reading a tensor name")?;
            let n_dims = r.u32()?;
            if n_dims > MAX_DIMS {
                bail!("tensor `{name}` has {n_dims} dimensions (at most {MAX_DIMS})");
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64()?);
            }
            if dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).is_none() {
                bail!("tensor `{name}` has dimensions {dims:?} whose product overflows");
            }
            let ggml_type = r.u32()?;
            let offset = r.u64()?;
            tensors.push(TensorInfo { name, dims, ggml_type, offset });
        }

        let mut g = Gguf { version, metadata, tensors, data_offset: 0, path: path.to_path_buf() };
        let alignment = match g.metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(_) => g.get_u64("general.alignment")?,
        };
        if alignment == 0 || !alignment.is_power_of_two() {
            bail!("general.alignment = {alignment} is not a power of two");
        }
        g.data_offset = r.pos.div_ceil(alignment) * alignment;

        for t in &g.tensors {
            if t.offset % alignment != 0 {
                bail!("tensor `{}` offset {} is not a multiple of the alignment {alignment}", t.name, t.offset);
            }
            // A row that is not whole blocks would be decoded with blocks spanning rows; ggml
            // refuses such files too.
            if let Some(kind) = GgmlType::from_id(t.ggml_type) {
                let block = kind.block().1 as u64;
                if !t.row_len().is_multiple_of(block) {
                    bail!(
                        "tensor `{}` of type {} has {} elements per row (dimensions {:?}), not a multiple of its block size {block}",
                        t.name,
                        kind.name(),
                        t.row_len(),
                        t.dims
                    );
                }
            }
            // Unknown types are allowed through (a later reader may know them); known ones must
            // lie inside the file, which catches truncated downloads at open time.
            if let Some(n) = t.n_bytes() {
                let end = g.data_offset.checked_add(t.offset).and_then(|o| o.checked_add(n));
                if end.is_none_or(|e| e > len) {
                    bail!(
                        "tensor `{}` ({} bytes at data offset {}) runs past the end of the file ({len} bytes); \
                         is the file truncated?",
                        t.name,
                        n,
                        t.offset
                    );
                }
            }
        }
        Ok(g)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn missing(&self, key: &str) -> anyhow::Error {
        anyhow!("{}: metadata key `{key}` missing", self.path.display())
    }

    fn wrong_type(&self, key: &str, want: &str, got: &Value) -> anyhow::Error {
        anyhow!("{}: metadata key `{key}` is {}, expected {want}", self.path.display(), got.type_name())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.metadata.contains_key(key)
    }

    fn req(&self, key: &str) -> Result<&Value> {
        self.metadata.get(key).ok_or_else(|| self.missing(key))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.req(key)?;
        v.as_str().ok_or_else(|| self.wrong_type(key, "string", v))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.req(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(self.wrong_type(key, "bool", v)),
        }
    }

    /// Any integer type that fits in `T`; converters write ids and counts with varying widths.
    fn get_int<T: TryFrom<i128>>(&self, key: &str, want: &str) -> Result<T> {
        let v = self.req(key)?;
        let i = v.as_i128().ok_or_else(|| self.wrong_type(key, want, v))?;
        T::try_from(i).map_err(|_| anyhow!("{}: metadata key `{key}` = {i} does not fit in {want}", self.path.display()))
    }

    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get_int(key, "u32")
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get_int(key, "u64")
    }

    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.get_int(key, "i64")
    }

    /// `None` when the key is absent; an error when it is present with the wrong type.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        if self.contains(key) {
            self.get_u32(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        if self.contains(key) {
            self.get_bool(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        if self.contains(key) {
            self.get_str(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Any float or integer type.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.req(key)?;
        v.as_f64().ok_or_else(|| self.wrong_type(key, "number", v))
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.get_f64(key).map(|v| v as f32)
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        match self.req(key)? {
            Value::Array(a) => Ok(a),
            v => Err(self.wrong_type(key, "array", v)),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.get_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_str().ok_or_else(|| self.wrong_type(&format!("{key}[{i}]"), "string", v)))
            .collect()
    }

    fn get_int_array<T: TryFrom<i128>>(&self, key: &str, want: &str) -> Result<Vec<T>> {
        self.get_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let x = v.as_i128().ok_or_else(|| self.wrong_type(&format!("{key}[{i}]"), want, v))?;
                T::try_from(x).map_err(|_| anyhow!("{}: metadata key `{key}[{i}]` = {x} does not fit in {want}", self.path.display()))
            })
            .collect()
    }

    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        self.get_int_array(key, "i32")
    }

    pub fn get_u32_array(&self, key: &str) -> Result<Vec<u32>> {
        self.get_int_array(key, "u32")
    }

    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        self.get_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_f64().map(|x| x as f32).ok_or_else(|| self.wrong_type(&format!("{key}[{i}]"), "number", v)))
            .collect()
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw on-disk bytes of one tensor (still quantised).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> Result<Vec<u8>> {
        let n = t.n_bytes().ok_or_else(|| {
            anyhow!(
                "{}: tensor `{}` has ggml type {} ({}), whose size this reader does not know",
                self.path.display(),
                t.name,
                t.ggml_type,
                ggml_type_name(t.ggml_type)
            )
        })?;
        let mut f = File::open(&self.path).with_context(|| format!("cannot open {}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.data_offset + t.offset))?;
        let mut buf = vec![0u8; n as usize];
        f.read_exact(&mut buf).with_context(|| format!("{}: reading tensor `{}` ({n} bytes)", self.path.display(), t.name))?;
        Ok(buf)
    }
}

/// The test model, `<workspace>/models/SmolLM2-135M-Instruct.Q4_1.gguf` or `$RECTIFY_MODEL`.
/// Panics when it is missing: a test that silently passes without its model proves nothing.
/// Shared by the tests of every crate in the workspace.
#[doc(hidden)]
pub fn test_model_path() -> PathBuf {
    let p = match std::env::var_os("RECTIFY_MODEL") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    assert!(p.is_file(), "test model {} not found: run `make model` (or set RECTIFY_MODEL to a GGUF file)", p.display());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    // ----- dequantisation, on hand-built blocks -----

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn dequant_q4_0() {
        let mut b = f16b(0.5).to_vec();
        // Byte j: low nibble j % 16, high nibble 15 - j % 16.
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let w = dequantize(2, &b, 32).unwrap();
        assert_eq!(w[0], -4.0); // (0 - 8) * 0.5
        assert_eq!(w[1], -3.5); // (1 - 8) * 0.5
        assert_eq!(w[15], 3.5); // (15 - 8) * 0.5
        assert_eq!(w[16], 3.5); // high nibble of byte 0 is 15
        assert_eq!(w[31], -4.0); // high nibble of byte 15 is 0

        // Two blocks: the second has its own scale.
        let mut b2 = b.clone();
        b2.extend(f16b(-2.0));
        b2.extend([0x88u8; 16]);
        let w2 = dequantize(2, &b2, 64).unwrap();
        assert_eq!(&w2[..32], &w[..]);
        assert!(w2[32..].iter().all(|&x| x == 0.0));
        let mut b3 = f16b(-2.0).to_vec();
        b3.extend([0x9Au8; 16]); // low 0xA -> (10-8)*-2 = -4, high 0x9 -> (9-8)*-2 = -2
        let w3 = dequantize(2, &b3, 32).unwrap();
        assert!(w3[..16].iter().all(|&x| x == -4.0) && w3[16..].iter().all(|&x| x == -2.0));
    }

    #[test]
    fn dequant_q4_1() {
        let mut b = f16b(0.25).to_vec();
        b.extend(f16b(-1.0));
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let w = dequantize(3, &b, 32).unwrap();
        assert_eq!(w[0], -1.0); // 0 * 0.25 - 1
        assert_eq!(w[3], -0.25); // 3 * 0.25 - 1
        assert_eq!(w[15], 2.75); // 15 * 0.25 - 1
        assert_eq!(w[16], 2.75);
        assert_eq!(w[31], -1.0);
    }

    #[test]
    fn dequant_q8_0() {
        let mut b = f16b(0.125).to_vec();
        b.extend((0..32i8).map(|j| (j * 4 - 64) as u8));
        let w = dequantize(8, &b, 32).unwrap();
        assert_eq!(w[0], -8.0); // -64 * 0.125
        assert_eq!(w[16], 0.0);
        assert_eq!(w[31], 7.5); // 60 * 0.125
        let mut b = f16b(1.0).to_vec();
        b.extend([0x80u8, 0x7F].iter().cycle().take(32));
        let w = dequantize(8, &b, 32).unwrap();
        assert_eq!((w[0], w[1]), (-128.0, 127.0));
    }

    #[test]
    fn dequant_f16_bf16_f32() {
        // f16 0x3C00 = 1.0, 0xC000 = -2.0, 0x3555 ~ 0.33325
        let w = dequantize(1, &[0x00, 0x3C, 0x00, 0xC0, 0x55, 0x35], 3).unwrap();
        assert_eq!(&w[..2], &[1.0, -2.0]);
        assert_eq!(w[2], 1365.0 / 4096.0);
        // bf16 is the top half of an f32: 0x3F80 = 1.0, 0xC040 = -3.0, 0x4049 ~ 3.140625
        let w = dequantize(30, &[0x80, 0x3F, 0x40, 0xC0, 0x49, 0x40], 3).unwrap();
        assert_eq!(w, vec![1.0, -3.0, 3.140625]);
        let mut b = 1.5f32.to_le_bytes().to_vec();
        b.extend((-0.1f32).to_le_bytes());
        assert_eq!(dequantize(0, &b, 2).unwrap(), vec![1.5, -0.1]);
    }

    /// Every type against the `gguf` package's numpy dequantisation, block by block, on random
    /// blocks (scripts/gguf_dequant_fixtures.py).
    #[test]
    fn dequant_matches_gguf_package() {
        #[derive(serde::Deserialize)]
        struct Case {
            id: u32,
            n: usize,
            bytes_hex: String,
            values: Vec<f32>,
        }
        #[derive(serde::Deserialize)]
        struct Fixture {
            gguf_version: String,
            types: BTreeMap<String, Case>,
        }
        let text = include_str!("../tests/fixtures/gguf_dequant.json");
        let fixture: Fixture = serde_json::from_str(text).unwrap();
        assert_eq!(fixture.gguf_version, "0.19.0");
        let names: Vec<&str> = fixture.types.keys().map(String::as_str).collect();
        let readable: Vec<&str> = GgmlType::dequantizable().map(GgmlType::name).collect();
        assert_eq!(names.len(), readable.len(), "fixture {names:?} vs readable {readable:?}");
        for (name, case) in &fixture.types {
            let kind = GgmlType::from_id(case.id).unwrap();
            assert_eq!(kind.name(), name);
            let bytes: Vec<u8> =
                (0..case.bytes_hex.len()).step_by(2).map(|i| u8::from_str_radix(&case.bytes_hex[i..i + 2], 16).unwrap()).collect();
            let got = dequantize(case.id, &bytes, case.n).unwrap();
            let (_, block) = kind.block();
            for (k, (g, want)) in got.chunks(block).zip(case.values.chunks(block)).enumerate() {
                for (j, (g, w)) in g.iter().zip(want).enumerate() {
                    // ggml's float operations in ggml's order: equal to the last bit.
                    assert_eq!(g.to_bits(), w.to_bits(), "{name} block {k} element {j}: {g} vs gguf {w}");
                }
            }
        }
    }

    #[test]
    fn dequant_large_tensor_spans_chunks() {
        // More than one rayon chunk, with a different scale per block.
        let n_blocks = DEQUANT_CHUNK / 32 * 3 + 5;
        let mut b = Vec::new();
        for k in 0..n_blocks {
            b.extend(f16b((k % 7) as f32));
            b.extend((0..32).map(|j| j as u8));
        }
        let w = dequantize(8, &b, n_blocks * 32).unwrap();
        for k in [0, 1, n_blocks / 2, n_blocks - 1] {
            for j in [0, 5, 31] {
                assert_eq!(w[k * 32 + j], j as f32 * (k % 7) as f32, "block {k} elem {j}");
            }
        }
    }

    #[test]
    fn dequant_rejects_unsupported_and_short() {
        let e = dequantize(15, &[0; 292], 256).unwrap_err().to_string();
        let all = "F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, BF16";
        assert!(e.contains("ggml type 15 (Q8_K)") && e.contains(all), "{e}");
        let e = dequantize(16, &[0; 66], 256).unwrap_err().to_string();
        assert!(e.contains("ggml type 16 (IQ2_XXS), which cannot be dequantised"), "{e}");
        // ggml.h's ids of the types listed without a kernel: named, never decoded.
        let named = [
            (16, "IQ2_XXS"),
            (17, "IQ2_XS"),
            (18, "IQ3_XXS"),
            (19, "IQ1_S"),
            (20, "IQ4_NL"),
            (21, "IQ3_S"),
            (22, "IQ2_S"),
            (23, "IQ4_XS"),
            (29, "IQ1_M"),
            (34, "TQ1_0"),
            (35, "TQ2_0"),
            (39, "MXFP4"),
        ];
        for (id, name) in named {
            assert_eq!(ggml_type_name(id), name);
            let why = not_dequantizable(id).unwrap();
            assert!(why.contains(&format!("ggml type {id} ({name})")), "{why}");
        }
        // Retired ids are named as retired; others not in the table are unknown.
        for id in [4, 5, 31, 32, 33, 36, 37, 38] {
            assert!(ggml_type_name(id).contains("retired from ggml"), "{id}");
            assert!(not_dequantizable(id).unwrap().contains("retired"), "{id}");
        }
        assert_eq!(ggml_type_name(99), "unknown");
        let e = dequantize(2, &[0; 17], 32).unwrap_err().to_string();
        assert!(e.contains("17 bytes"), "{e}");
    }

    use std::io::Write;

    #[test]
    fn reads_smollm2_header() {
        let g = Gguf::open(test_model_path()).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.tensors.len(), 272);
        assert_eq!(g.metadata.len(), 33);
        assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(g.get_u32("llama.block_count").unwrap(), 30);
        assert_eq!(g.get_u32("llama.embedding_length").unwrap(), 576);
        assert_eq!(g.get_u32("llama.attention.head_count_kv").unwrap(), 3);
        assert!((g.get_f32("llama.rope.freq_base").unwrap() - 100000.0).abs() < 1e-3);
        assert_eq!(g.get_str_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
        assert_eq!(g.get_str_array("tokenizer.ggml.merges").unwrap().len(), 48900);
        assert_eq!(g.get_i32_array("tokenizer.ggml.token_type").unwrap().len(), 49152);
        assert_eq!(g.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1);
        assert_eq!(g.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 2);
        assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
        assert_eq!(g.data_offset % 32, 0);

        let emb = g.tensor("token_embd.weight").unwrap();
        assert_eq!(emb.dims, vec![576, 49152]);
        assert_eq!(ggml_type_name(emb.ggml_type), "Q8_0");
        let q = g.tensor("blk.0.attn_q.weight").unwrap();
        assert_eq!(q.dims, vec![576, 576]);
        assert_eq!(ggml_type_name(q.ggml_type), "Q4_1");
        assert!(g.tensor("output.weight").is_none());
        let types = |n| g.tensors.iter().filter(|t| ggml_type_name(t.ggml_type) == n).count();
        assert_eq!((types("Q4_1"), types("F32"), types("Q8_0")), (210, 61, 1));

        // The last tensor ends at the end of the file: the data offset and sizes are right.
        let end = g.tensors.iter().map(|t| g.data_offset + t.offset + t.n_bytes().unwrap()).max().unwrap();
        assert_eq!(end, std::fs::metadata(g.path()).unwrap().len());

        let norm = g.tensor("blk.0.attn_norm.weight").unwrap();
        let bytes = g.tensor_bytes(norm).unwrap();
        assert_eq!(bytes.len(), 576 * 4);
        let w: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert!(w.iter().all(|x| x.is_finite()) && w.iter().any(|&x| x != 0.0));
    }

    #[test]
    fn errors_name_file_and_key() {
        let g = Gguf::open(test_model_path()).unwrap();
        let e = g.get_str("tokenizer.ggml.nope").unwrap_err().to_string();
        assert!(e.contains("SmolLM2-135M-Instruct.Q4_1.gguf") && e.contains("`tokenizer.ggml.nope` missing"), "{e}");
        let e = g.get_u32("general.architecture").unwrap_err().to_string();
        assert!(e.contains("`general.architecture` is string, expected u32"), "{e}");
        let e = g.get_str_array("llama.block_count").unwrap_err().to_string();
        assert!(e.contains("expected array"), "{e}");
    }

    fn write_file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        f
    }

    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(version.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    }

    fn gguf_str(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }

    #[test]
    fn synthetic_file_every_type_and_alignment() {
        let mut b = header(2, 1, 14);
        let mut kv = |key: &str, ty: u32, val: &[u8]| {
            gguf_str(&mut b, key);
            b.extend(ty.to_le_bytes());
            b.extend(val);
        };
        kv("u8", 0, &[7]);
        kv("i8", 1, &[0xff]);
        kv("u16", 2, &500u16.to_le_bytes());
        kv("i16", 3, &(-500i16).to_le_bytes());
        kv("u32", 4, &70000u32.to_le_bytes());
        kv("i32", 5, &(-70000i32).to_le_bytes());
        kv("f32", 6, &1.5f32.to_le_bytes());
        kv("bool", 7, &[1]);
        let mut s = Vec::new();
        gguf_str(&mut s, "héllo");
        kv("str", 8, &s);
        let mut arr = 5u32.to_le_bytes().to_vec();
        arr.extend(2u64.to_le_bytes());
        arr.extend(3i32.to_le_bytes());
        arr.extend((-4i32).to_le_bytes());
        kv("arr", 9, &arr);
        kv("u64", 10, &(1u64 << 40).to_le_bytes());
        kv("i64", 11, &(-1i64 << 40).to_le_bytes());
        kv("f64", 12, &2.25f64.to_le_bytes());
        kv("general.alignment", 4, &64u32.to_le_bytes());
        gguf_str(&mut b, "t");
        b.extend(2u32.to_le_bytes());
        b.extend(4u64.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // F32
        b.extend(0u64.to_le_bytes());
        let header_end = b.len();
        b.resize(header_end.div_ceil(64) * 64, 0);
        for i in 0..8 {
            b.extend((i as f32).to_le_bytes());
        }
        let f = write_file(&b);
        let g = Gguf::open(f.path()).unwrap();
        assert_eq!(g.version, 2);
        assert_eq!(g.data_offset, (header_end as u64).div_ceil(64) * 64);
        assert_eq!(g.get("u8"), Some(&Value::U8(7)));
        assert_eq!(g.get("i8"), Some(&Value::I8(-1)));
        assert_eq!(g.get("i16"), Some(&Value::I16(-500)));
        assert_eq!(g.get("f64"), Some(&Value::F64(2.25)));
        assert_eq!(g.get("bool"), Some(&Value::Bool(true)));
        assert_eq!(g.get_str("str").unwrap(), "héllo");
        assert_eq!(g.get_u32("u16").unwrap(), 500);
        assert_eq!(g.get_u32("u8").unwrap(), 7);
        assert!(g.get_u32("i32").is_err(), "negative value must not pass as u32");
        assert!(g.get_u32("u64").is_err(), "2^40 must not pass as u32");
        assert_eq!(g.get_i64("i64").unwrap(), -1 << 40);
        assert_eq!(g.get_i32_array("arr").unwrap(), vec![3, -4]);
        assert_eq!(g.get_f32("f32").unwrap(), 1.5);
        let t = &g.tensors[0];
        assert_eq!((t.dims.clone(), t.n_bytes()), (vec![4, 2], Some(32)));
        let data = g.tensor_bytes(t).unwrap();
        assert_eq!(f32::from_le_bytes(data[28..32].try_into().unwrap()), 7.0);
    }

    #[test]
    fn corrupt_files_error_without_huge_allocations() {
        let err = |b: &[u8]| format!("{:#}", Gguf::open(write_file(b).path()).unwrap_err());

        assert!(err(b"GGML\x03\0\0\0").contains("bad magic"));
        assert!(err(&header(1, 0, 0)).contains("version 1"));
        assert!(err(&header(3, u64::MAX, 0)).contains("tensor count"));
        assert!(err(&header(3, 0, 1 << 60)).contains("metadata count"));

        // A string claiming 2^62 bytes.
        let mut b = header(3, 0, 1);
        b.extend((1u64 << 62).to_le_bytes());
        b.extend([b'k'; 64]);
        assert!(err(&b).contains("string length"));

        // An array claiming 2^40 u32 elements.
        let mut b = header(3, 0, 1);
        gguf_str(&mut b, "a");
        b.extend(9u32.to_le_bytes());
        b.extend(4u32.to_le_bytes());
        b.extend((1u64 << 40).to_le_bytes());
        let e = err(&b);
        assert!(e.contains("array length") && e.contains("reading metadata key `a`"), "{e}");

        // Truncated in the middle of a value.
        let mut b = header(3, 0, 1);
        gguf_str(&mut b, "x");
        b.extend(10u32.to_le_bytes());
        b.extend([1, 2, 3]);
        assert!(err(&b).contains("end of file"));

        // Unknown value type.
        let mut b = header(3, 0, 1);
        gguf_str(&mut b, "x");
        b.extend(99u32.to_le_bytes());
        b.extend([0; 8]);
        assert!(err(&b).contains("unknown metadata value type 99"));

        // Tensor whose data runs past the end of the file.
        let mut b = header(3, 1, 0);
        gguf_str(&mut b, "w");
        b.extend(1u32.to_le_bytes());
        b.extend(1024u64.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        let e = err(&b);
        assert!(e.contains("tensor `w`") && e.contains("past the end"), "{e}");

        // Too many dimensions.
        let mut b = header(3, 1, 0);
        gguf_str(&mut b, "w");
        b.extend(5u32.to_le_bytes());
        b.extend([0u8; 60]);
        assert!(err(&b).contains("5 dimensions"));

        // A big-endian file: the magic is bytes, the version 3 is byte-swapped.
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_be_bytes());
        b.extend(0u64.to_be_bytes());
        b.extend(0u64.to_be_bytes());
        let e = err(&b);
        assert!(e.contains("big-endian") && e.contains("50331648 is 3 byte-swapped"), "{e}");

        // A quantised tensor whose rows are not whole blocks: 2 rows of 16 Q8_0 weights hold 32
        // values in total, one block's worth, which would be decoded across the two rows.
        let mut w = crate::gguf_writer::GgufWriter::new();
        w.tensors.push(crate::gguf_writer::GgufTensor { name: "w".into(), dims: vec![16, 2], ggml_type: 8, bytes: vec![0; 34] });
        let e = err(&w.to_bytes());
        assert!(e.contains("tensor `w` of type Q8_0 has 16 elements per row") && e.contains("block size 32"), "{e}");
        w.tensors[0].dims = vec![32, 1];
        assert!(Gguf::open(write_file(&w.to_bytes()).path()).is_ok());

        // The file name is in the message.
        let f = write_file(b"GGUF");
        let e = format!("{:#}", Gguf::open(f.path()).unwrap_err());
        assert!(e.contains(&f.path().display().to_string()), "{e}");
    }
}
