//! Tokenization throughput on the texts of a recipe, for `make bench-data`.
//!
//! Writes the templated texts and the tokenizer.json so that `scripts/bench_tokenize.py` can
//! encode the very same texts with Python's `tokenizers` as the baseline, and the sha256 of all
//! ids so the two runs can be checked to agree token for token.
//!
//! usage: bench_tokenize RECIPE OUT_DIR

use pipeline::{build::load_tokenizer, ingest};
use schemas::Recipe;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.expect("runs > 0"))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 3, "usage: bench_tokenize RECIPE OUT_DIR");
    let recipe_path = PathBuf::from(&args[1]);
    let out = PathBuf::from(&args[2]);
    std::fs::create_dir_all(&out)?;
    let recipe = Recipe::load(&recipe_path)?;
    let (tok, _) = load_tokenizer(&recipe, &recipe_path)?;
    let examples = ingest::ingest(&recipe.sources, &recipe_path, &recipe.ingest, "", None)?.examples;
    let texts: Vec<String> = examples.iter().map(|e| tok.render(&e.prompt, Some(&e.response))).collect::<anyhow::Result<_>>()?;
    let bytes: usize = texts.iter().map(String::len).sum();

    let mut f = std::io::BufWriter::new(std::fs::File::create(out.join("texts.jsonl"))?);
    for t in &texts {
        writeln!(f, "{}", serde_json::to_string(t)?)?;
    }
    f.flush()?;
    std::fs::write(out.join("tokenizer.json"), tok.tokenizer_json())?;

    let inner = tok.tokenizer();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // `encode_batch_fast` on both sides: no offsets (Python's `encode_batch` would compute
    // character offsets, Rust's byte offsets, so the two would not do the same work).
    let (batch_s, encs) = best_of(3, || inner.encode_batch_fast(refs.clone(), false).expect("encodes"));
    let ids: Vec<Vec<u32>> = encs.iter().map(|e| e.get_ids().to_vec()).collect();
    let tokens: usize = ids.iter().map(Vec::len).sum();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    let (single_s, _) = best_of(3, || pool.install(|| inner.encode_batch_fast(refs.clone(), false).expect("encodes").len()));
    let pairs: Vec<(&[schemas::Turn], &str, &str)> =
        examples.iter().map(|e| (e.context.as_slice(), e.prompt.as_str(), e.response.as_str())).collect();
    let (chat_s, _) = best_of(3, || tok.encode_chat_batch(&pairs));

    let mut hasher_input = Vec::with_capacity(tokens * 4);
    for row in &ids {
        for id in row {
            hasher_input.extend_from_slice(&id.to_le_bytes());
        }
        hasher_input.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    let report = serde_json::json!({
        "texts": texts.len(),
        "bytes": bytes,
        "tokens": tokens,
        "threads": rayon::current_num_threads(),
        "rust_encode_batch_fast_seconds": batch_s,
        "rust_encode_batch_fast_tokens_per_s": tokens as f64 / batch_s,
        "rust_single_thread_seconds": single_s,
        "rust_single_thread_tokens_per_s": tokens as f64 / single_s,
        "rust_chat_template_and_mask_seconds": chat_s,
        "rust_chat_template_and_mask_tokens_per_s": tokens as f64 / chat_s,
        "ids_sha256": schemas::sha256_hex(&hasher_input),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
