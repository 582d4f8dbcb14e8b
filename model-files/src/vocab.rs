//! Whether a snapshot's token ids mean the same tokens to a model. A snapshot holds ids, not
//! text, and a model of another family whose embedding table is large enough reads them without
//! complaint (Qwen2.5's 151,936 rows take SmolLM2's ids as other text), so training, scoring,
//! sampling and evaluation would run on garbage. The check compares the model's own tokenizer
//! with the snapshot's, id by id.

use crate::checkpoint::is_gguf;
use crate::gguf::Gguf;
use anyhow::{anyhow, bail, Result};
use schemas::snapshot::{read_manifest, TOKENIZER_FILE};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// The token each id stands for in a model's own tokenizer.
pub struct ModelTokens {
    /// By id; None where the tokenizer names no token (a gap, or a repeated string's later id).
    tokens: Vec<Option<String>>,
    /// The file they were read from.
    source: PathBuf,
}

impl ModelTokens {
    /// A GGUF's `tokenizer.ggml.tokens`, else the `tokenizer.json` of a Hugging Face folder (or
    /// of the folder a lone `.safetensors` file is in). None when the model carries no tokenizer
    /// (rectify's checkpoints, a folder saved without one).
    pub fn of(model: &Path) -> Result<Option<ModelTokens>> {
        if is_gguf(model) {
            let g = Gguf::open(model)?;
            if !g.contains("tokenizer.ggml.tokens") {
                return Ok(None);
            }
            let tokens = g.get_str_array("tokenizer.ggml.tokens")?.into_iter().map(|t| Some(t.to_string())).collect();
            return Ok(Some(ModelTokens { tokens, source: model.to_path_buf() }));
        }
        let dir = if model.is_dir() { model } else { model.parent().unwrap_or(Path::new(".")) };
        let path = dir.join(TOKENIZER_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| anyhow!("{}: cannot load tokenizer.json: {e}", path.display()))?;
        Ok(Some(ModelTokens { tokens: by_id(&tokenizer), source: path }))
    }

    /// Fails when an id of `tokenizer` (the snapshot's, from `snapshot`) stands for another token
    /// here. Ids only one side has are not compared: a converter may pad the vocabulary to the
    /// embedding size ([PAD151665] ...), and a model may add tokens after the snapshot's.
    pub fn check(&self, tokenizer: &Tokenizer, snapshot: &Path) -> Result<()> {
        let theirs = by_id(tokenizer);
        let differ: Vec<(usize, &str, &str)> = theirs
            .iter()
            .zip(&self.tokens)
            .enumerate()
            .filter_map(|(id, (s, m))| match (s, m) {
                (Some(s), Some(m)) if s != m => Some((id, s.as_str(), m.as_str())),
                _ => None,
            })
            .collect();
        let shared = theirs.iter().zip(&self.tokens).filter(|(s, m)| s.is_some() && m.is_some()).count();
        if differ.is_empty() && shared > 0 {
            return Ok(());
        }
        let examples: Vec<String> =
            differ.iter().take(3).map(|(id, s, m)| format!("id {id} is {s:?} in the snapshot, {m:?} in the model")).collect();
        let recipe = read_manifest(snapshot).map(|m| m.recipe.path).unwrap_or_else(|_| "RECIPE".into());
        bail!(
            "the tokenizer of {} is not the one snapshot {} was tokenized with: {} of the {shared} ids both have stand for other \
             tokens ({}), so the snapshot's ids would be other text to this model. Build the snapshot with this model's \
             tokenizer: pipeline build --recipe {recipe} --tokenizer {} --out NEW_DIR",
            self.source.display(),
            snapshot.display(),
            differ.len(),
            if examples.is_empty() { "no id in common".to_string() } else { examples.join("; ") },
            self.source.parent().filter(|_| !is_gguf(&self.source)).unwrap_or(&self.source).display(),
        )
    }
}

/// `check` for a model file and a snapshot folder, reading the snapshot's `tokenizer.json`. A
/// model without a tokenizer cannot be checked, and is said so.
pub fn check_model_tokens(model: &Path, snapshot: &Path) -> Result<()> {
    let Some(mine) = ModelTokens::of(model)? else {
        tracing::info!("{} carries no tokenizer: not checked against snapshot {}'s", model.display(), snapshot.display());
        return Ok(());
    };
    let path = snapshot.join(TOKENIZER_FILE);
    let theirs = Tokenizer::from_file(&path).map_err(|e| anyhow!("{}: cannot load tokenizer.json: {e}", path.display()))?;
    mine.check(&theirs, snapshot)
}

fn by_id(tokenizer: &Tokenizer) -> Vec<Option<String>> {
    let vocab = tokenizer.get_vocab(true);
    let mut tokens = vec![None; vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0)];
    for (token, id) in vocab {
        tokens[id as usize] = Some(token);
    }
    tokens
}
