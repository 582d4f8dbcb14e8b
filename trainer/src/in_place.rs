//! Element-wise updates of whole parameters and gradients: in place on the buffers of Burn's CPU
//! backend (Flex), as tensor ops on any other backend.
//!
//! Why: Flex writes an op's result into its left operand only when that operand is unshared and
//! in row order; otherwise it gives the result a fresh buffer (which the kernel zeroes page by
//! page), and it runs each op on one thread. A linear weight's gradient comes out of the backward
//! pass as a transposed view, so every op on it copied it into row order first. Summing the two
//! micro-batches' gradients, the global clip and AdamW's sixteen ops per parameter thus took
//! 1.3 to 1.5 s of a 7.5 s step of 2 x 512 tokens on 2 cores (measured; PyTorch updates `.grad`
//! and its parameters in place). An element-wise update does not care in which order a buffer
//! holds the elements, only that its operands hold them in the same order. So here each operand
//! keeps the gradient's layout (a parameter or moment in another layout is copied into it once,
//! at its first update, and stays so), and each update is one pass over the buffers, split over
//! the cores by chunks. Every element goes through the same f32 operations, in the same order, as
//! with the tensor ops, so the sums and AdamW's updates are the same bits either way (tested
//! here and in `optim`); only the clip's norm is summed differently (see `optim::clip_global`).
//! A GPU backend keeps the tensor ops: its tensors live on the device.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;
use std::any::{Any, TypeId};

/// How element-wise updates run: see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arithmetic {
    /// On the tensors' buffers in host memory, one pass per update (Burn's CPU backend only).
    InPlace,
    /// As Burn tensor ops, each with its own output (any backend).
    TensorOps,
}

impl Arithmetic {
    /// In place on Burn's CPU backend, tensor ops elsewhere. The test is the one [`Buffer`]'s
    /// downcast relies on: the backend's tensors are Flex's own.
    pub fn for_backend<B: Backend>() -> Self {
        if TypeId::of::<B::FloatTensorPrimitive>() == TypeId::of::<FlexTensor>() {
            Arithmetic::InPlace
        } else {
            Arithmetic::TensorOps
        }
    }
}

/// Elements per piece of work when an update is split over the cores: 256 KiB of f32, big
/// enough that scheduling costs nothing next to the arithmetic, small enough to balance.
pub const CHUNK: usize = 1 << 16;

/// A matrix of Burn's CPU backend as Flex's own tensor: its buffer and layout.
pub struct Buffer(FlexTensor);

impl Buffer {
    /// `t`'s buffer, in the layout it has if that layout covers the buffer exactly (row order or
    /// a transposed view of it), else copied into row order. Panics on another backend: callers
    /// choose [`Arithmetic::InPlace`] only for Flex.
    pub fn new<B: Backend>(t: Tensor<B, 2>) -> Self {
        let primitive: Box<dyn Any> = Box::new(t.into_primitive().tensor());
        let flex = *primitive.downcast::<FlexTensor>().expect("in-place arithmetic runs on Burn's CPU backend only");
        assert_eq!(flex.dtype(), DType::F32, "parameters and gradients are f32");
        Buffer(if covers_buffer(&flex) { flex } else { flex.to_contiguous() })
    }

    /// Back to a tensor of the backend (a no-op conversion: `B` is Flex).
    pub fn into_tensor<B: Backend>(self) -> Tensor<B, 2> {
        let primitive: Box<dyn Any> = Box::new(self.0);
        Tensor::from_primitive(TensorPrimitive::Float(*primitive.downcast::<B::FloatTensorPrimitive>().expect("Burn's CPU backend")))
    }

    /// The same elements held in `like`'s buffer order: unchanged if it is already, else copied.
    pub fn in_order_of(self, like: &Buffer) -> Buffer {
        let (a, b) = (self.0.layout(), like.0.layout());
        assert_eq!(a.shape(), b.shape(), "element-wise operands have one shape");
        if a.strides() == b.strides() {
            return self;
        }
        Buffer(if b.is_contiguous() { self.0.to_contiguous() } else { self.0.transpose(0, 1).to_contiguous().transpose(0, 1) })
    }

    /// Zeros in `like`'s shape and buffer order.
    pub fn zeros_like(like: &Buffer) -> Buffer {
        let layout = like.0.layout().clone();
        Buffer(FlexTensor::zeros(layout.shape().clone(), DType::F32).with_layout(layout))
    }

    /// The elements in buffer order.
    pub fn values(&self) -> &[f32] {
        self.0.storage::<f32>()
    }

    /// The elements in buffer order, to write (copied first if another tensor shares them).
    pub fn values_mut(&mut self) -> &mut [f32] {
        self.0.storage_mut::<f32>()
    }
}

/// Whether the buffer holds exactly the tensor's elements, in row order or transposed, so that
/// an element-wise op may walk the buffer itself.
fn covers_buffer(t: &FlexTensor) -> bool {
    let layout = t.layout();
    layout.start_offset() == 0
        && t.bytes().len() == layout.num_elements() * 4
        && (layout.is_contiguous() || layout.transpose(0, 1).is_contiguous())
}

/// `acc + g`, element by element: the gradients of two micro-batches (or backward passes) summed.
pub fn add<B: Backend>(acc: Tensor<B, 2>, g: Tensor<B, 2>, arithmetic: Arithmetic, threads: usize) -> Tensor<B, 2> {
    match arithmetic {
        Arithmetic::TensorOps => acc + g,
        Arithmetic::InPlace => {
            let mut acc = Buffer::new(acc);
            let g = Buffer::new(g).in_order_of(&acc);
            zip_chunks(acc.values_mut(), g.values(), threads, |a, g| a.iter_mut().zip(g).for_each(|(a, g)| *a += g));
            acc.into_tensor()
        }
    }
}

/// `f` over the chunks of `a`, on the cores when `threads` > 1.
pub fn for_chunks(a: &mut [f32], threads: usize, f: impl Fn(&mut [f32]) + Send + Sync) {
    if threads > 1 {
        a.par_chunks_mut(CHUNK).for_each(f);
    } else {
        a.chunks_mut(CHUNK).for_each(f);
    }
}

/// `f` over matching chunks of `a` (written) and `b` (read), on the cores when `threads` > 1.
pub fn zip_chunks(a: &mut [f32], b: &[f32], threads: usize, f: impl Fn(&mut [f32], &[f32]) + Send + Sync) {
    assert_eq!(a.len(), b.len(), "element-wise operands have one shape");
    if threads > 1 {
        a.par_chunks_mut(CHUNK).zip(b.par_chunks(CHUNK)).for_each(|(a, b)| f(a, b));
    } else {
        a.chunks_mut(CHUNK).zip(b.chunks(CHUNK)).for_each(|(a, b)| f(a, b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn t(v: Vec<f32>, rows: usize) -> Tensor<Flex, 2> {
        let n = v.len();
        Tensor::from_data(TensorData::new(v, [rows, n / rows]), &Default::default())
    }

    fn values(t: Tensor<Flex, 2>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    #[test]
    fn flex_is_updated_in_place_and_other_backends_by_tensor_ops() {
        assert_eq!(Arithmetic::for_backend::<Flex>(), Arithmetic::InPlace);
        assert_eq!(Arithmetic::for_backend::<burn::backend::Autodiff<Flex>>(), Arithmetic::TensorOps);
        // What training on CPU uses: the optimizer's and the gradient sums' choice.
        let opt = crate::optim::AdamW::<Flex>::new(crate::optim::AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0 });
        assert_eq!(opt.arithmetic, Arithmetic::InPlace);
    }

    /// Over several chunks, for every mix of row order, transposed views (as linear weights'
    /// gradients come) and a narrowed view (copied), and with an accumulator shared with another
    /// tensor (left as it was): the same bits as Burn's add.
    #[test]
    fn add_in_place_equals_the_tensor_op() {
        let (rows, cols) = (CHUNK / 64 + 3, 3 * 64 + 1);
        let n = rows * cols;
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 1e-3).collect();
        // The same logical matrix held transposed in its buffer.
        let transposed = |v: &[f32]| t(v.to_vec(), rows).transpose().into_data().to_vec::<f32>().unwrap();
        let held_transposed = |v: &[f32]| t(transposed(v), cols).transpose();
        let narrowed = |v: &[f32]| t([v, &v[..cols]].concat(), rows + 1).narrow(0, 0, rows);
        let want = values(t(a.clone(), rows) + t(b.clone(), rows));
        type Make<'a> = &'a dyn Fn(&[f32]) -> Tensor<Flex, 2>;
        let plain = |v: &[f32]| t(v.to_vec(), rows);
        let makes: [(&str, Make); 3] = [("row order", &plain), ("transposed", &held_transposed), ("narrowed", &narrowed)];
        for threads in [1, 2] {
            for (what_a, make_a) in makes {
                for (what_b, make_b) in makes {
                    let sum = add(make_a(&a), make_b(&b), Arithmetic::InPlace, threads);
                    assert_eq!(values(sum), want, "{what_a} + {what_b} on {threads} threads");
                }
            }
            let shared = held_transposed(&a);
            let sum = add(shared.clone(), plain(&b), Arithmetic::InPlace, threads);
            assert_eq!(values(sum), want);
            assert_eq!(values(shared), a);
        }
        assert_eq!(values(add(plain(&a), plain(&b), Arithmetic::TensorOps, 2)), want);
    }
}
