//! Whether a snapshot's token ids mean the same tokens to a model. A snapshot holds ids, not
//! text, and a model of another family whose embedding table is large enough reads them without
//! complaint (Qwen2.5's 151,936 rows take SmolLM2's ids as other text), so training, scoring,
//! sampling and evaluation would run on garbage. The check compares the model's own tokenizer
//! with the snapshot's, id by id.

use crate::checkpoint::{is_gguf, model_folder};
use crate::gguf::Gguf;
use anyhow::{bail, Result};
use schemas::snapshot::{read_manifest, TOKENIZER_FILE};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// Whether `model` carries a tokenizer of its own: a GGUF, or a folder with `tokenizer.json`
/// (a rectify `checkpoints/step-N` folder has none).
pub fn carries_tokenizer(model: &Path) -> bool {
    is_gguf(model) || model_folder(model).join(TOKENIZER_FILE).exists()
}

/// The token each id stands for in a model's own tokenizer.
pub struct ModelTokens {
    /// By id; None where the tokenizer names no token (a gap, or a repeated string's later id).
    tokens: Vec<Option<String>>,
    /// The file they were read from.
    source: PathBuf,
}

impl ModelTokens {
    /// A GGUF's `tokenizer.ggml.tokens`, else the `tokenizer.json` of a Hugging Face folder (or
    /// of the folder a lone `.safetensors` file is in). None, with a warning saying why, when
    /// the model carries no tokenizer that can be read (rectify's `checkpoints/step-N` folders,
    /// a folder saved without one): the model itself does not need it.
    pub fn of(model: &Path) -> Result<Option<ModelTokens>> {
        if is_gguf(model) {
            let g = Gguf::open(model)?;
            if !g.contains("tokenizer.ggml.tokens") {
                tracing::warn!("{} has no tokenizer.ggml.tokens: its vocabulary is not checked against the snapshot's", model.display());
                return Ok(None);
            }
            let tokens = g.get_str_array("tokenizer.ggml.tokens")?.into_iter().map(|t| Some(t.to_string())).collect();
            return Ok(Some(ModelTokens { tokens, source: model.to_path_buf() }));
        }
        let path = model_folder(model).join(TOKENIZER_FILE);
        if !path.exists() {
            tracing::warn!("{} carries no {TOKENIZER_FILE}: its vocabulary is not checked against the snapshot's", model.display());
            return Ok(None);
        }
        match Tokenizer::from_file(&path) {
            Ok(t) => Ok(Some(ModelTokens { tokens: by_id(&t), source: path })),
            Err(e) => {
                tracing::warn!("{}: cannot load ({e}): the model's vocabulary is not checked against the snapshot's", path.display());
                Ok(None)
            }
        }
    }

    /// Fails when an id in `used` (what the snapshot's rows or prompts hold, plus the tokens
    /// padding and generation use) stands for another token here than in `tokenizer` (the
    /// snapshot's, from `snapshot`). Other ids that differ only bring a warning: Llama 3.1
    /// renamed some reserved tokens of Llama 3.0, and llama.cpp's converter rewrites the text of
    /// some added tokens. Ids only one side has are not compared: a converter may pad the
    /// vocabulary to the embedding size ([PAD151665] ...), and a model may add tokens.
    pub fn check(&self, tokenizer: &Tokenizer, used: impl IntoIterator<Item = u32>, snapshot: &Path) -> Result<()> {
        let theirs = by_id(tokenizer);
        let Differences { shared, used_differ, unused_differ } = self.differences(&theirs, used);
        let examples = |d: &[(usize, &str, &str)]| -> String {
            let e: Vec<String> =
                d.iter().take(3).map(|(id, s, m)| format!("id {id} is {s:?} in the snapshot, {m:?} in the model")).collect();
            e.join("; ")
        };
        if used_differ.is_empty() && shared > 0 {
            if !unused_differ.is_empty() {
                tracing::warn!(
                    "{} ids that snapshot {} does not use stand for other tokens in {} ({}); the ids it uses agree",
                    unused_differ.len(),
                    snapshot.display(),
                    self.source.display(),
                    examples(&unused_differ)
                );
            }
            return Ok(());
        }
        let manifest = read_manifest(snapshot).ok();
        let recipe = manifest.as_ref().map_or_else(|| "RECIPE".to_string(), |m| m.recipe.path.clone());
        let rescore = if manifest.is_some_and(|m| m.ref_logprobs.is_some()) { ", then score it again (trainer score)" } else { "" };
        let model = match self.source.parent() {
            Some(dir) if !is_gguf(&self.source) => {
                if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                }
            }
            _ => &self.source,
        };
        bail!(
            "the tokenizer of {} is not the one snapshot {} was tokenized with: {}, so the snapshot's ids would be \
             other text to this model. Build the snapshot with this model's tokenizer: pipeline build --recipe {recipe} \
             --tokenizer {} --out NEW_DIR{rescore}",
            self.source.display(),
            snapshot.display(),
            if shared == 0 {
                "they have no id in common".to_string()
            } else {
                format!(
                    "{} of the {shared} ids both have stand for other tokens, {} of them used by the snapshot ({})",
                    used_differ.len() + unused_differ.len(),
                    used_differ.len(),
                    examples(&used_differ)
                )
            },
            model.display(),
        )
    }
}

impl ModelTokens {
    /// For `trainer generate --tokenizer T`: fails when T gives an id of `used` (the prompt's,
    /// the stop tokens) another token than the model's own tokenizer does.
    pub fn check_tokenizer(&self, tokenizer: &Tokenizer, source: &Path, used: impl IntoIterator<Item = u32>) -> Result<()> {
        let theirs = by_id(tokenizer);
        let d = self.differences(&theirs, used);
        if d.shared > 0 && d.used_differ.is_empty() {
            return Ok(());
        }
        let e: Vec<String> = d
            .used_differ
            .iter()
            .take(3)
            .map(|(id, t, m)| format!("id {id} is {t:?} in {}, {m:?} in the model", source.display()))
            .collect();
        bail!(
            "{} is not the model's tokenizer ({}): the prompt would be other text to it ({}). Leave --tokenizer out to use \
             the model's own",
            source.display(),
            self.source.display(),
            if d.shared == 0 { "they have no id in common".to_string() } else { e.join("; ") }
        )
    }

    /// How the tokens of `theirs` (by id) differ from this model's, on the ids of `used` and on
    /// the others. Ids only one side has are not compared.
    fn differences<'a>(&'a self, theirs: &'a [Option<String>], used: impl IntoIterator<Item = u32>) -> Differences<'a> {
        let mut in_use = vec![false; theirs.len()];
        for id in used {
            if let Some(u) = in_use.get_mut(id as usize) {
                *u = true;
            }
        }
        let both = |id: usize| Some((theirs.get(id)?.as_deref()?, self.tokens.get(id)?.as_deref()?));
        let differ = |strict: bool| -> Vec<(usize, &'a str, &'a str)> {
            (0..theirs.len())
                .filter(|&id| in_use[id] == strict)
                .filter_map(|id| both(id).filter(|(s, m)| s != m).map(|(s, m)| (id, s, m)))
                .collect()
        };
        Differences {
            shared: (0..theirs.len()).filter(|&id| both(id).is_some()).count(),
            used_differ: differ(true),
            unused_differ: differ(false),
        }
    }
}

/// Ids both tokenizers have, and `(id, theirs, the model's)` where they differ.
struct Differences<'a> {
    shared: usize,
    used_differ: Vec<(usize, &'a str, &'a str)>,
    unused_differ: Vec<(usize, &'a str, &'a str)>,
}

/// `check` for a model file and a snapshot folder, reading the snapshot's `tokenizer.json` and
/// adding its end-of-turn and padding ids to `used`.
pub fn check_model_tokens(model: &Path, snapshot: &Path, used: impl IntoIterator<Item = u32>) -> Result<()> {
    let Some(mine) = ModelTokens::of(model)? else { return Ok(()) };
    let manifest = read_manifest(snapshot)?;
    let path = snapshot.join(TOKENIZER_FILE);
    let theirs = Tokenizer::from_file(&path).map_err(|e| anyhow::anyhow!("{}: cannot load tokenizer.json: {e}", path.display()))?;
    mine.check(&theirs, used.into_iter().chain([manifest.tokenizer.eos_id, manifest.tokenizer.pad_id]), snapshot)
}

fn by_id(tokenizer: &Tokenizer) -> Vec<Option<String>> {
    let vocab = tokenizer.get_vocab(true);
    let mut tokens = vec![None; vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0)];
    for (token, id) in vocab {
        tokens[id as usize] = Some(token);
    }
    tokens
}
