//! Model files, without a tensor library: the GGUF reader (with the one table of ggml types),
//! safetensors, `config.json`, the one list of a decoder's parameters (`params`), checkpoints in
//! Hugging Face names and layout, rotary frequencies and their scaling (`rope`), the chat tokenizer
//! (from GGUF metadata, or `tokenizer.json` plus a template), the check that a snapshot's ids mean
//! the same tokens to a model (`vocab`), PEFT LoRA adapter folders (`lora`), and a GGUF writer for
//! tests (`gguf_writer`).

pub mod checkpoint;
pub mod config;
pub mod generation_config;
pub mod gguf;
pub mod gguf_writer;
pub mod lora;
pub mod params;
pub mod rope;
pub mod safetensors;
pub mod tokenizer;
pub mod vocab;

pub use checkpoint::{Checkpoint, HostTensor};
pub use config::LlamaConfig;
pub use gguf::test_model_path;
