//! `y = x · Wᵀ` on the host for the CPU decoder (`host.rs`): f32 activations `x` `[rows, k]`
//! times a weight `W` `[out, k]` (Hugging Face's layout for a linear layer).
//!
//! Why not Burn's or a general GEMM: decoding multiplies a few rows by each weight, where a
//! GEMM's packing costs more than the product, and Burn's CPU matmul runs such products on one
//! thread. Here the weight is stored once, at load, in the layout the kernel reads
//! ("panels": 16 consecutive outputs interleaved along `k`, `[out / 16][k][16]`), and streamed
//! once per call for all rows, split across threads by blocks of outputs.
//!
//! Every output is one chain of fused multiply-adds over `i = 0..k`, in that order, whatever
//! the number of rows, the register tile, or the thread. A sequence therefore gets the same bits
//! alone as in any batch, which the greedy parity tests rely on. (A CPU without AVX-512 runs a
//! portable kernel that multiplies and adds separately: other bits, the same invariance.)

use rayon::prelude::*;
use std::cell::RefCell;

/// Outputs per panel: one AVX-512 register of f32.
const PANEL: usize = 16;
/// Panels and activation rows of one task: the task's weights (`4 · 16 · k` f32 at most, 393 KB
/// at k = 1536) and rows stay in a core's L2 cache.
const BLOCK_PANELS: usize = 4;
const BLOCK_ROWS: usize = 64;
/// The largest register tile: 8 rows x 2 panels is 16 accumulators, 2 weight loads and 8
/// broadcasts per 16 multiply-adds.
const TILE_ROWS: usize = 8;

/// A weight matrix `[out, k]` in panels: f32, or still in the GGUF file's blocks (Q4_1, Q8_0).
/// A quantised panel is widened to f32 before use by the expression the GGUF loader dequantises
/// with (`model_files::gguf`), so the product has the same bits as with the dequantised f32
/// matrix, from a fifth (Q4_1) or a quarter (Q8_0) of the bytes.
#[derive(Clone, Debug)]
pub struct Weight {
    pub out: usize,
    pub k: usize,
    store: Store,
}

#[derive(Clone, Debug)]
enum Store {
    /// `[panels][k][16]`; outputs past `out` are zero.
    F32(Vec<f32>),
    /// Per panel and block of 32 along `k`: the 16 outputs' scales `d` then minimums `m` (the
    /// file's f16, widened) in `dm`, and in `nibbles` 16 bytes `u` of 16 outputs each: the low
    /// nibble is weight `2u` of the block, the high nibble weight `2u + 1` (the file pairs `t`
    /// with `t + 16`; consecutive pairs let the kernel widen in the order it sums); a weight is
    /// `q · d + m`.
    Q4_1 { dm: Vec<f32>, nibbles: Vec<u8> },
    /// Per panel and block of 32: the 16 outputs' scales in `d`, and 32 × 16 signed weights in
    /// `qs`; a weight is `q · d`.
    Q8_0 { d: Vec<f32>, qs: Vec<i8> },
}

impl Store {
    /// Appends `other`'s panels if it is of the same kind; false (and unchanged) otherwise.
    fn append(&mut self, other: &Store) -> bool {
        match (self, other) {
            (Store::F32(a), Store::F32(b)) => a.extend_from_slice(b),
            (Store::Q4_1 { dm, nibbles }, Store::Q4_1 { dm: dm2, nibbles: nibbles2 }) => {
                dm.extend_from_slice(dm2);
                nibbles.extend_from_slice(nibbles2);
            }
            (Store::Q8_0 { d, qs }, Store::Q8_0 { d: d2, qs: qs2 }) => {
                d.extend_from_slice(d2);
                qs.extend_from_slice(qs2);
            }
            _ => return false,
        }
        true
    }
}

impl Weight {
    /// From a row-major `[out, k]` matrix.
    pub fn new(out: usize, k: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), out * k, "weight [{out}, {k}] from {} values", data.len());
        let mut panels = vec![0f32; out.div_ceil(PANEL) * k * PANEL];
        for (o, row) in data.chunks_exact(k.max(1)).enumerate() {
            let (p, j) = (o / PANEL, o % PANEL);
            for (i, &v) in row.iter().enumerate() {
                panels[(p * k + i) * PANEL + j] = v;
            }
        }
        Weight { out, k, store: Store::F32(panels) }
    }

    /// A GGUF matrix in its blocks, for the types the kernel widens (Q4_1, Q8_0); `None` for any
    /// other type (the caller keeps the f32 matrix).
    pub fn from_quantised(m: &model_files::checkpoint::QuantisedMatrix) -> Option<Self> {
        use model_files::gguf::{f16_at, GgmlType};
        let [out, k] = m.shape;
        let block_bytes = m.ggml_type.block().0;
        let nb = k / 32;
        assert_eq!(m.bytes.len() / block_bytes * 32, out * k, "{:?} [{out}, {k}] from {} bytes", m.ggml_type, m.bytes.len());
        let panels = out.div_ceil(PANEL);
        // Block b of output o, or None past the last output (a zero weight).
        let block = |o: usize, b: usize| (o < out).then(|| &m.bytes[(o * nb + b) * block_bytes..][..block_bytes]);
        let store = match m.ggml_type {
            GgmlType::Q4_1 => {
                let mut dm = Vec::with_capacity(panels * nb * 2 * PANEL);
                let mut nibbles = Vec::with_capacity(panels * nb * 16 * PANEL);
                for p in 0..panels {
                    for b in 0..nb {
                        let blocks: Vec<Option<&[u8]>> = (0..PANEL).map(|j| block(p * PANEL + j, b)).collect();
                        dm.extend(blocks.iter().map(|q| q.map_or(0.0, |q| f16_at(q, 0))));
                        dm.extend(blocks.iter().map(|q| q.map_or(0.0, |q| f16_at(q, 2))));
                        // Weight t of a block: the low nibble of byte t, or the high nibble of byte t - 16.
                        let nibble = |q: &[u8], t: usize| if t < 16 { q[4 + t] & 0xF } else { q[4 + t - 16] >> 4 };
                        for u in 0..16 {
                            nibbles.extend(blocks.iter().map(|q| q.map_or(0, |q| nibble(q, 2 * u) | nibble(q, 2 * u + 1) << 4)));
                        }
                    }
                }
                Store::Q4_1 { dm, nibbles }
            }
            GgmlType::Q8_0 => {
                let mut d = Vec::with_capacity(panels * nb * PANEL);
                let mut qs = Vec::with_capacity(panels * k * PANEL);
                for p in 0..panels {
                    for b in 0..nb {
                        let blocks: Vec<Option<&[u8]>> = (0..PANEL).map(|j| block(p * PANEL + j, b)).collect();
                        d.extend(blocks.iter().map(|q| q.map_or(0.0, |q| f16_at(q, 0))));
                        for i in 0..32 {
                            qs.extend(blocks.iter().map(|q| q.map_or(0, |q| q[2 + i] as i8)));
                        }
                    }
                }
                Store::Q8_0 { d, qs }
            }
            _ => return None,
        };
        Some(Weight { out, k, store })
    }

    /// The rows of `parts` stacked (fused projections: q, k, v or gate, up). Parts of one kind
    /// whose outputs fill whole panels are concatenated as they are; others are stacked in f32
    /// (the same values, so the same products).
    pub fn stack(parts: &[&Weight]) -> Self {
        let k = parts[0].k;
        assert!(parts.iter().all(|p| p.k == k), "stacked weights share their input width");
        let out = parts.iter().map(|p| p.out).sum();
        let whole = parts.iter().all(|p| p.out.is_multiple_of(PANEL));
        if whole {
            let mut store = parts[0].store.clone();
            if parts[1..].iter().all(|p| store.append(&p.store)) {
                return Weight { out, k, store };
            }
        }
        Weight::new(out, k, parts.iter().flat_map(|p| (0..p.out).flat_map(|o| p.row(o))).collect())
    }

    /// Row `o` as f32 (an embedding lookup).
    pub fn row(&self, o: usize) -> Vec<f32> {
        let (p, j) = (o / PANEL, o % PANEL);
        match &self.store {
            Store::F32(data) => (0..self.k).map(|i| data[(p * self.k + i) * PANEL + j]).collect(),
            _ => {
                let mut panel = vec![0f32; self.k * PANEL];
                self.widen(p, &mut panel);
                panel.iter().skip(j).step_by(PANEL).copied().collect()
            }
        }
    }

    /// Bytes one pass over the weight reads.
    pub fn bytes(&self) -> usize {
        match &self.store {
            Store::F32(d) => 4 * d.len(),
            Store::Q4_1 { dm, nibbles } => 4 * dm.len() + nibbles.len(),
            Store::Q8_0 { d, qs } => 4 * d.len() + qs.len(),
        }
    }

    /// How the weight is stored: `f32`, `q4_1` or `q8_0`.
    pub fn kind(&self) -> &'static str {
        match &self.store {
            Store::F32(_) => "f32",
            Store::Q4_1 { .. } => "q4_1",
            Store::Q8_0 { .. } => "q8_0",
        }
    }

    fn panels(&self) -> usize {
        self.out.div_ceil(PANEL)
    }

    /// Panel `p` of a quantised weight as f32 `[k][16]` into `dst`.
    fn widen(&self, p: usize, dst: &mut [f32]) {
        let (k, nb) = (self.k, self.k / 32);
        match &self.store {
            Store::F32(_) => unreachable!("f32 panels are read in place"),
            Store::Q4_1 { dm, nibbles } => {
                for b in 0..nb {
                    let dm = &dm[(p * nb + b) * 2 * PANEL..][..2 * PANEL];
                    let q = &nibbles[(p * nb + b) * 16 * PANEL..][..16 * PANEL];
                    let dst = &mut dst[b * 32 * PANEL..][..32 * PANEL];
                    widen_q4_1(dm, q, dst);
                }
            }
            Store::Q8_0 { d, qs } => {
                for b in 0..nb {
                    let d = &d[(p * nb + b) * PANEL..][..PANEL];
                    let q = &qs[(p * k + b * 32) * PANEL..][..32 * PANEL];
                    let dst = &mut dst[b * 32 * PANEL..][..32 * PANEL];
                    widen_q8_0(d, q, dst);
                }
            }
        }
    }
}

/// One Q4_1 block of a panel, `[32][16]`: `q · d + m`, a product and a sum each rounded, as
/// `model_files::gguf` computes them.
fn widen_q4_1(dm: &[f32], q: &[u8], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; the slices have the lengths the loads and stores need.
        return unsafe { x86::widen_q4_1(dm, q, dst) };
    }
    let (d, m) = dm.split_at(PANEL);
    for u in 0..16 {
        for j in 0..PANEL {
            let v = q[u * PANEL + j];
            dst[2 * u * PANEL + j] = (v & 0xF) as f32 * d[j] + m[j];
            dst[(2 * u + 1) * PANEL + j] = (v >> 4) as f32 * d[j] + m[j];
        }
    }
}

/// One Q8_0 block of a panel, `[32][16]`: `q · d`.
fn widen_q8_0(d: &[f32], q: &[i8], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: as in `widen_q4_1`.
        return unsafe { x86::widen_q8_0(d, q, dst) };
    }
    for (dst, q) in dst.chunks_exact_mut(PANEL).zip(q.chunks_exact(PANEL)) {
        for ((y, &q), &d) in dst.iter_mut().zip(q).zip(d) {
            *y = q as f32 * d;
        }
    }
}

/// `y[r][o] = Σ_i x[r][i] · w[o][i] (+ bias[o])` for `rows` rows of `x`; `y` is `[rows, out]`.
pub fn matmul(x: &[f32], rows: usize, w: &Weight, bias: Option<&[f32]>, y: &mut [f32]) {
    let (k, out) = (w.k, w.out);
    assert_eq!(x.len(), rows * k, "x is [{rows}, {k}]");
    assert_eq!(y.len(), rows * out, "y is [{rows}, {out}]");
    let row_blocks = rows.div_ceil(BLOCK_ROWS);
    let panel_blocks = w.panels().div_ceil(BLOCK_PANELS);
    let y_at = SharedOut(y.as_mut_ptr());
    (0..row_blocks * panel_blocks).into_par_iter().for_each(|t| {
        let (rb, pb) = (t / panel_blocks, t % panel_blocks);
        let (r0, r1) = (rb * BLOCK_ROWS, ((rb + 1) * BLOCK_ROWS).min(rows));
        let (p0, p1) = (pb * BLOCK_PANELS, ((pb + 1) * BLOCK_PANELS).min(w.panels()));
        let run = |panels: Panels| {
            // SAFETY: tasks write disjoint blocks of `y` (rows r0..r1, outputs of panels
            // p0..p1), and `y` outlives the parallel loop.
            unsafe { block(&x[r0 * k..r1 * k], r1 - r0, k, panels, p1 - p0, p0 * PANEL, out, y_at.at(r0 * out)) }
        };
        match &w.store {
            Store::F32(data) => run(Panels::F32(&data[p0 * k * PANEL..p1 * k * PANEL])),
            // Decoding a few rows: quantised panels are widened in registers as they are used
            // (up to two row tiles, widening costs less than storing and reloading f32).
            _ if r1 - r0 <= 2 * TILE_ROWS && fused_kernels() => run(w.panels_from(p0)),
            // Many rows: each panel is widened once into f32 and read by every row tile.
            _ => SCRATCH.with_borrow_mut(|scratch| {
                scratch.resize(BLOCK_PANELS * k * PANEL, 0.0);
                for p in p0..p1 {
                    w.widen(p, &mut scratch[(p - p0) * k * PANEL..][..k * PANEL]);
                }
                run(Panels::F32(&scratch[..(p1 - p0) * k * PANEL]))
            }),
        }
    });
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(out) {
            for (v, b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
}

/// Whether the CPU runs the kernels that widen quantised panels in registers.
pub(crate) fn fused_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512f");
    #[allow(unreachable_code)]
    false
}

thread_local! {
    /// Widened panels of a quantised weight, one block at a time per thread.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y`'s base pointer, shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: see `matmul`: every task writes its own block.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// A method, not a field access: a closure would capture the bare pointer field.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Weight panels as a kernel reads them, from some panel on.
#[derive(Clone, Copy)]
enum Panels<'a> {
    /// `[panels][k][16]`
    F32(&'a [f32]),
    /// `dm` and `nibbles` of `Store::Q4_1`.
    Q4_1(&'a [f32], &'a [u8]),
    /// `d` and `qs` of `Store::Q8_0`.
    Q8_0(&'a [f32], &'a [i8]),
}

impl<'a> Panels<'a> {
    /// The panels from `p` on.
    fn skip(self, p: usize, k: usize) -> Self {
        let nb = k / 32;
        match self {
            Panels::F32(d) => Panels::F32(&d[p * k * PANEL..]),
            Panels::Q4_1(dm, q) => Panels::Q4_1(&dm[p * nb * 2 * PANEL..], &q[p * nb * 16 * PANEL..]),
            Panels::Q8_0(d, q) => Panels::Q8_0(&d[p * nb * PANEL..], &q[p * k * PANEL..]),
        }
    }
}

impl Weight {
    /// The stored panels from `p` on.
    fn panels_from(&self, p: usize) -> Panels<'_> {
        let all = match &self.store {
            Store::F32(d) => Panels::F32(d),
            Store::Q4_1 { dm, nibbles } => Panels::Q4_1(dm, nibbles),
            Store::Q8_0 { d, qs } => Panels::Q8_0(d, qs),
        };
        all.skip(p, self.k)
    }
}

/// `rows` rows of `x` (`[rows, k]`) times `n_panels` panels into `y` (row stride `out`) from
/// column `col`, in register tiles: 8 rows x 2 panels when the block has 8 rows or more
/// (prompts, wide batches), else all rows x 4 panels, or x 2 past 4 rows (decoding a few
/// sequences). Whatever the tile, each output is the same chain.
///
/// # Safety
/// `y` must be valid for writes of `rows` rows of stride `out` at columns `col..col + 16 · panels`
/// clipped to `out`.
#[allow(clippy::too_many_arguments)]
unsafe fn block(x: &[f32], rows: usize, k: usize, panels: Panels, n_panels: usize, col: usize, out: usize, y: *mut f32) {
    let (tr, tp) = match rows {
        TILE_ROWS.. => (TILE_ROWS, 2),
        5.. => (rows, 2),
        _ => (rows, 4),
    };
    let mut r = 0;
    while r < rows {
        let nr = tr.min(rows - r);
        let mut p = 0;
        while p < n_panels {
            let np = tp.min(n_panels - p);
            let t = Tile { x: &x[r * k..(r + nr) * k], k, w: panels.skip(p, k), col: col + p * PANEL, out };
            // SAFETY: rows r..r + nr and the panels' columns are inside the caller's block.
            unsafe { tile(&t, nr, np, y.add(r * out)) };
            p += np;
        }
        r += nr;
    }
}

/// The operands of one register tile.
struct Tile<'a> {
    /// `[rows, k]`
    x: &'a [f32],
    k: usize,
    w: Panels<'a>,
    /// First output column, and the row stride of `y`.
    col: usize,
    out: usize,
}

/// Runs the tile of `rows x panels` (at most 8 x 2 or 4 x 4) on the widest kernel the CPU has.
///
/// # Safety
/// As for `block`.
unsafe fn tile(t: &Tile, rows: usize, panels: usize, y: *mut f32) {
    macro_rules! by_shape {
        ($($kernel:ident)::+) => {
            match (rows, panels) {
                (1, 1) => $($kernel)::+::<1, 1>(t, y), (1, 2) => $($kernel)::+::<1, 2>(t, y), (1, 3) => $($kernel)::+::<1, 3>(t, y), (1, 4) => $($kernel)::+::<1, 4>(t, y),
                (2, 1) => $($kernel)::+::<2, 1>(t, y), (2, 2) => $($kernel)::+::<2, 2>(t, y), (2, 3) => $($kernel)::+::<2, 3>(t, y), (2, 4) => $($kernel)::+::<2, 4>(t, y),
                (3, 1) => $($kernel)::+::<3, 1>(t, y), (3, 2) => $($kernel)::+::<3, 2>(t, y), (3, 3) => $($kernel)::+::<3, 3>(t, y), (3, 4) => $($kernel)::+::<3, 4>(t, y),
                (4, 1) => $($kernel)::+::<4, 1>(t, y), (4, 2) => $($kernel)::+::<4, 2>(t, y), (4, 3) => $($kernel)::+::<4, 3>(t, y), (4, 4) => $($kernel)::+::<4, 4>(t, y),
                (5, 1) => $($kernel)::+::<5, 1>(t, y), (5, 2) => $($kernel)::+::<5, 2>(t, y),
                (6, 1) => $($kernel)::+::<6, 1>(t, y), (6, 2) => $($kernel)::+::<6, 2>(t, y),
                (7, 1) => $($kernel)::+::<7, 1>(t, y), (7, 2) => $($kernel)::+::<7, 2>(t, y),
                (8, 1) => $($kernel)::+::<8, 1>(t, y), (8, 2) => $($kernel)::+::<8, 2>(t, y),
                _ => unreachable!("tile {rows} x {panels}"),
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; the caller guarantees `y`.
        return unsafe {
            match t.w {
                Panels::F32(_) => by_shape!(x86::tile_f32),
                Panels::Q4_1(..) => by_shape!(x86::tile_q4_1),
                Panels::Q8_0(..) => by_shape!(x86::tile_q8_0),
            }
        };
    }
    // SAFETY: the caller guarantees `y`.
    unsafe { by_shape!(tile_portable) }
}

/// The portable kernel, on f32 panels (quantised ones are widened first): the same chains,
/// multiply and add rounded separately.
///
/// # Safety
/// As for `block`.
unsafe fn tile_portable<const R: usize, const P: usize>(t: &Tile, y: *mut f32) {
    let Panels::F32(w) = t.w else { unreachable!("quantised panels are fused only on AVX-512") };
    let mut acc = [[[0f32; PANEL]; P]; R];
    for i in 0..t.k {
        for (r, acc) in acc.iter_mut().enumerate() {
            let xv = t.x[r * t.k + i];
            for (p, acc) in acc.iter_mut().enumerate() {
                let w = &w[(p * t.k + i) * PANEL..][..PANEL];
                for (a, w) in acc.iter_mut().zip(w) {
                    *a += xv * w;
                }
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (p, acc) in acc.iter().enumerate() {
            let col = t.col + p * PANEL;
            for (j, &v) in acc.iter().enumerate().take(t.out.saturating_sub(col)) {
                // SAFETY: column col + j < out, inside the caller's block.
                unsafe { *y.add(r * t.out + col + j) = v };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Panels, Tile, PANEL};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU has AVX-512F; `y` as for `super::block`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_f32<const R: usize, const P: usize>(t: &Tile, y: *mut f32) {
        let Panels::F32(w) = t.w else { unreachable!("f32 kernel") };
        let k = t.k;
        assert!(t.x.len() >= R * k && w.len() >= P * k * PANEL, "tile operands");
        let (x, w) = (t.x.as_ptr(), w.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        for i in 0..k {
            let mut wv = [_mm512_setzero_ps(); P];
            for (p, wv) in wv.iter_mut().enumerate() {
                // SAFETY: (p · k + i) · 16 + 16 ≤ P · k · 16, asserted above.
                *wv = unsafe { _mm512_loadu_ps(w.add((p * k + i) * PANEL)) };
            }
            // SAFETY: i < k, asserted above.
            unsafe { fma_column(&mut acc, x.add(i), k, &wv) };
        }
        // SAFETY: as the caller guarantees.
        unsafe { store(t, &acc, y) }
    }

    /// The Q4_1 kernel for a few rows: each byte row of a block widened to two weight vectors
    /// (`super::Store::Q4_1`), used at once.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `y` as for `super::block`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_q4_1<const R: usize, const P: usize>(t: &Tile, y: *mut f32) {
        let Panels::Q4_1(dm, q) = t.w else { unreachable!("Q4_1 kernel") };
        let (k, nb) = (t.k, t.k / 32);
        assert!(t.x.len() >= R * k && dm.len() >= P * nb * 2 * PANEL && q.len() >= P * nb * 16 * PANEL, "tile operands");
        let (x, dm, q) = (t.x.as_ptr(), dm.as_ptr(), q.as_ptr());
        let low = _mm512_set1_epi32(0xF);
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        for b in 0..nb {
            let (mut d, mut m) = ([_mm512_setzero_ps(); P], [_mm512_setzero_ps(); P]);
            for p in 0..P {
                // SAFETY: block b of panel p is inside the lengths asserted above.
                unsafe {
                    d[p] = _mm512_loadu_ps(dm.add((p * nb + b) * 2 * PANEL));
                    m[p] = _mm512_loadu_ps(dm.add((p * nb + b) * 2 * PANEL + PANEL));
                }
            }
            for u in 0..16 {
                let (mut lo, mut hi) = ([_mm512_setzero_ps(); P], [_mm512_setzero_ps(); P]);
                for p in 0..P {
                    // SAFETY: as above.
                    (lo[p], hi[p]) = unsafe { q4_1_pair(q.add(((p * nb + b) * 16 + u) * PANEL), low, d[p], m[p]) };
                }
                let i = b * 32 + 2 * u;
                // SAFETY: i + 1 < k.
                unsafe {
                    fma_column(&mut acc, x.add(i), k, &lo);
                    fma_column(&mut acc, x.add(i + 1), k, &hi);
                }
            }
        }
        // SAFETY: as the caller guarantees.
        unsafe { store(t, &acc, y) }
    }

    /// The Q8_0 kernel for a few rows: each row of a block widened as it is used.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `y` as for `super::block`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_q8_0<const R: usize, const P: usize>(t: &Tile, y: *mut f32) {
        let Panels::Q8_0(ds, q) = t.w else { unreachable!("Q8_0 kernel") };
        let (k, nb) = (t.k, t.k / 32);
        assert!(t.x.len() >= R * k && ds.len() >= P * nb * PANEL && q.len() >= P * k * PANEL, "tile operands");
        let (x, ds, q) = (t.x.as_ptr(), ds.as_ptr(), q.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        for b in 0..nb {
            let mut d = [_mm512_setzero_ps(); P];
            for (p, d) in d.iter_mut().enumerate() {
                // SAFETY: block b of panel p is inside the lengths asserted above.
                *d = unsafe { _mm512_loadu_ps(ds.add((p * nb + b) * PANEL)) };
            }
            for i in b * 32..(b + 1) * 32 {
                let mut wv = [_mm512_setzero_ps(); P];
                for p in 0..P {
                    // SAFETY: as above.
                    wv[p] = unsafe { q8_0_lanes(q.add((p * k + i) * PANEL), d[p]) };
                }
                // SAFETY: i < k.
                unsafe { fma_column(&mut acc, x.add(i), k, &wv) };
            }
        }
        // SAFETY: as the caller guarantees.
        unsafe { store(t, &acc, y) }
    }

    /// `acc[r][p] += x[r][i] · w[p]` for every row: `x` points at `x[0][i]`, rows `k` apart.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn fma_column<const R: usize, const P: usize>(acc: &mut [[__m512; P]; R], x: *const f32, k: usize, w: &[__m512; P]) {
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: the caller's x has R rows.
            let xv = _mm512_set1_ps(unsafe { *x.add(r * k) });
            for (a, w) in acc.iter_mut().zip(w) {
                *a = _mm512_fmadd_ps(xv, *w, *a);
            }
        }
    }

    /// The tile's sums into `y`, lanes past `out` masked off.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store<const R: usize, const P: usize>(t: &Tile, acc: &[[__m512; P]; R], y: *mut f32) {
        for (r, acc) in acc.iter().enumerate() {
            for (p, a) in acc.iter().enumerate() {
                let col = t.col + p * PANEL;
                let valid = t.out.saturating_sub(col).min(PANEL);
                let mask: __mmask16 = if valid == PANEL { !0 } else { (1u16 << valid) - 1 };
                // SAFETY: the masked lanes are columns below `out`, inside the caller's block.
                unsafe { _mm512_mask_storeu_ps(y.add(r * t.out + col), mask, *a) };
            }
        }
    }

    /// 16 bytes of Q4_1 nibbles as the two weight vectors `lo · d + m`, `hi · d + m`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn q4_1_pair(q: *const u8, low: __m512i, d: __m512, m: __m512) -> (__m512, __m512) {
        // SAFETY: the caller's q holds 16 bytes.
        let v = _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(q as *const __m128i) });
        let lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, low));
        let hi = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(v));
        (_mm512_add_ps(_mm512_mul_ps(lo, d), m), _mm512_add_ps(_mm512_mul_ps(hi, d), m))
    }

    /// 16 Q8_0 weights as `q · d`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn q8_0_lanes(q: *const i8, d: __m512) -> __m512 {
        // SAFETY: the caller's q holds 16 bytes.
        let v = _mm512_cvtepi8_epi32(unsafe { _mm_loadu_si128(q as *const __m128i) });
        _mm512_mul_ps(_mm512_cvtepi32_ps(v), d)
    }

    /// # Safety
    /// The CPU has AVX-512F; `dm` holds 32 f32, `q` 256 bytes, `dst` 512 f32.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn widen_q4_1(dm: &[f32], q: &[u8], dst: &mut [f32]) {
        assert!(dm.len() >= 2 * PANEL && q.len() >= 16 * PANEL && dst.len() >= 32 * PANEL, "Q4_1 block");
        // SAFETY: lengths asserted above.
        unsafe {
            let d = _mm512_loadu_ps(dm.as_ptr());
            let m = _mm512_loadu_ps(dm.as_ptr().add(PANEL));
            let low = _mm512_set1_epi32(0xF);
            for u in 0..16 {
                let (lo, hi) = q4_1_pair(q.as_ptr().add(u * PANEL), low, d, m);
                _mm512_storeu_ps(dst.as_mut_ptr().add(2 * u * PANEL), lo);
                _mm512_storeu_ps(dst.as_mut_ptr().add((2 * u + 1) * PANEL), hi);
            }
        }
    }

    /// # Safety
    /// The CPU has AVX-512F; `d` holds 16 f32, `q` 512 bytes, `dst` 512 f32.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn widen_q8_0(d: &[f32], q: &[i8], dst: &mut [f32]) {
        assert!(d.len() >= PANEL && q.len() >= 32 * PANEL && dst.len() >= 32 * PANEL, "Q8_0 block");
        // SAFETY: lengths asserted above.
        unsafe {
            let d = _mm512_loadu_ps(d.as_ptr());
            for i in 0..32 {
                _mm512_storeu_ps(dst.as_mut_ptr().add(i * PANEL), q8_0_lanes(q.as_ptr().add(i * PANEL), d));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Against a plain f64 triple loop, over shapes that exercise every edge: rows and outputs
    /// not multiples of the tiles, panels or blocks.
    #[test]
    fn equals_the_plain_product() {
        for (rows, out, k) in [(1, 1, 1), (3, 5, 17), (4, 4, 16), (70, 130, 77), (5, 64, 576), (1, 200, 40), (9, 80, 3)] {
            let x = data(rows * k, 1);
            let wd = data(out * k, 2);
            let w = Weight::new(out, k, wd.clone());
            let bias = data(out, 3);
            let mut y = vec![f32::NAN; rows * out];
            matmul(&x, rows, &w, Some(&bias), &mut y);
            for r in 0..rows {
                for o in 0..out {
                    let want: f64 = (0..k).map(|i| x[r * k + i] as f64 * wd[o * k + i] as f64).sum::<f64>() + bias[o] as f64;
                    let got = y[r * out + o] as f64;
                    assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "[{rows},{out},{k}] y[{r}][{o}] = {got}, want {want}");
                }
            }
            assert_eq!(w.row(out - 1), wd[(out - 1) * k..], "row {}", out - 1);
        }
    }

    /// A matrix kept in its Q4_1 or Q8_0 blocks gives the same bits as its f32 dequantisation by
    /// the GGUF loader (random blocks, scales and minimums of both signs).
    #[test]
    fn quantised_weights_give_the_bits_of_their_dequantisation() {
        use model_files::checkpoint::QuantisedMatrix;
        use model_files::gguf::{dequantize, GgmlType};
        let (out, k, rows) = (37, 96, 70);
        let x = data(rows * k, 9);
        for (ty, id, block) in [(GgmlType::Q4_1, 3, 20), (GgmlType::Q8_0, 8, 34)] {
            let mut bytes: Vec<u8> = (0..out * k / 32 * block).map(|i| ((i as u32).wrapping_mul(2654435761) >> 13) as u8).collect();
            for b in bytes.chunks_exact_mut(block) {
                // Finite f16 scales (and minimums): exponent bits below all-ones.
                b[1] &= 0xBB;
                b[3] = if ty == GgmlType::Q4_1 { b[3] & 0xBB } else { b[3] };
            }
            let f32s = dequantize(id, &bytes, out * k).unwrap();
            let first_32_rows = bytes[..32 * k / 32 * block].to_vec();
            let q = Weight::from_quantised(&QuantisedMatrix { ggml_type: ty, shape: [out, k], bytes }).unwrap();
            let f = Weight::new(out, k, f32s.clone());
            // 1 and 5 rows widen in registers, 9 into f32 panels first, 70 both (64 + 6).
            for rows in [1, 5, 9, rows] {
                let (mut yq, mut yf) = (vec![0f32; rows * out], vec![0f32; rows * out]);
                matmul(&x[..rows * k], rows, &q, None, &mut yq);
                matmul(&x[..rows * k], rows, &f, None, &mut yf);
                assert_eq!(yq, yf, "{ty:?}, {rows} rows");
            }
            assert_eq!(q.row(5), f32s[5 * k..6 * k], "{ty:?} row");
            let stacked = Weight::stack(&[&q, &q]);
            assert_eq!((stacked.kind(), stacked.row(out + 5)), ("f32", q.row(5)), "{ty:?} stacked across a partial panel");
            let whole = Weight::from_quantised(&QuantisedMatrix { ggml_type: ty, shape: [32, k], bytes: first_32_rows }).unwrap();
            let stacked = Weight::stack(&[&whole, &whole]);
            assert_eq!((stacked.kind(), stacked.row(32 + 5)), (q.kind(), whole.row(5)), "{ty:?} stacked");
            assert!(q.bytes() * 4 < f.bytes() * 2, "{ty:?}: {} bytes vs {} as f32", q.bytes(), f.bytes());
        }
    }

    /// A row's outputs are the same bits alone as at any position of any batch (tiles of 1 x 4
    /// panels alone, 8 x 2 in the batch, edges of every size).
    #[test]
    fn a_row_gets_the_same_bits_in_any_batch() {
        let (k, out) = (100, 70);
        let w = Weight::new(out, k, data(out * k, 5));
        let x = data(67 * k, 6);
        let mut all = vec![0f32; 67 * out];
        matmul(&x, 67, &w, None, &mut all);
        for r in [0, 3, 4, 7, 8, 63, 64, 66] {
            let mut alone = vec![0f32; out];
            matmul(&x[r * k..(r + 1) * k], 1, &w, None, &mut alone);
            assert_eq!(alone, all[r * out..(r + 1) * out], "row {r}");
        }
        let mut five = vec![0f32; 5 * out];
        matmul(&x[60 * k..65 * k], 5, &w, None, &mut five);
        assert_eq!(five, all[60 * out..65 * out], "rows 60..65 as a batch of 5");
    }
}
