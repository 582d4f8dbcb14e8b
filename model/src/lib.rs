//! The decoder in Burn: one file per concern. `decoder` is the Llama / SmolLM2 / Qwen2 / Qwen3 forward
//! pass over packed rows, `kv_cache` the incremental forward pass used by generation, `generate`
//! batched generation, `sampling` the next-token choice, `logprobs` per-token log-probabilities
//! of packed rows (reference scoring, the probability histogram), `dropout` LoRA dropout's seeded
//! masks. `host` is the same decoder on
//! host memory for generation on CPU, over the kernel in `matmul`.

pub mod decoder;
pub mod dropout;
pub mod generate;
pub mod host;
pub mod kv_cache;
pub mod logprobs;
pub mod matmul;
pub mod sampling;

pub use decoder::Llama;
pub use generate::Generator;
pub use host::HostDecoder;
