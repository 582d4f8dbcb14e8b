//! Checkpoints: `checkpoints/step-NNNNNN/` holds the model as a Hugging Face folder, the
//! optimizer moments and the trainer state, written into a hidden folder and renamed into place
//! (the state file last), so a checkpoint that exists is complete and resumes to the same
//! weights. `final/` is the model alone, with the snapshot's tokenizer and chat template as a
//! Hugging Face folder has them.

use crate::optim::AdamW;
use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;
use model::Llama;
use model_files::checkpoint::save_hf;
use model_files::safetensors::write_safetensors;
use model_files::tokenizer::ChatTokenizer;
use schemas::manifest::TokenizerInfo;
use schemas::snapshot::publish_dir;
use schemas::train::TrainRecipe;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// A LoRA run's adapters beside the merged weights, as a PEFT adapter folder: what a resume
/// continues from, and what PEFT loads onto the base model.
pub const ADAPTER_DIR: &str = "adapter";

/// What a checkpoint needs besides weights and optimizer moments to resume exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    pub total_steps: u64,
    /// Rows consumed from the data stream; with the seed this fixes the next row.
    pub rows_consumed: u64,
    /// The data order is `shuffle(rows, epoch_seed(seed, epoch))`: the seed is the whole RNG state.
    pub seed: u64,
    pub snapshot_id: String,
    pub recipe: TrainRecipe,
    /// The base model the run started from (absent in checkpoints written before it was kept).
    #[serde(default)]
    pub base_model_sha256: Option<String>,
    /// [`model_files::lora::adapter_sha256`] of the adapter folder LoRA started from
    /// (`lora.from`); None for fresh adapters, full fine-tuning and older checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_from_sha256: Option<String>,
    /// What computed the steps up to this checkpoint (`burn flex`, `burn cuda, f32 matmuls`):
    /// engines agree to rounding, not in the last bits (empty in older checkpoints).
    #[serde(default)]
    pub engine: String,
}

fn checkpoint_dir(output: &Path, step: u64) -> PathBuf {
    output.join("checkpoints").join(format!("step-{step:06}"))
}

/// The newest complete checkpoint (its state file is written last, so its presence means
/// complete).
pub fn latest_checkpoint(output: &Path) -> anyhow::Result<Option<PathBuf>> {
    Ok(complete_checkpoints(output)?.pop())
}

/// The complete checkpoints, oldest first: by step number, not name (`step-1000000` sorts
/// before `step-999999` as text).
fn complete_checkpoints(output: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = output.join("checkpoints");
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut found = vec![];
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let step = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("step-")).and_then(|s| s.parse::<u64>().ok());
        if let Some(step) = step.filter(|_| path.join(STATE_FILE).exists()) {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// Deletes all but the newest `keep` complete checkpoints (recipe `keep_checkpoints`). Folders
/// that are not complete checkpoints are left alone.
pub fn prune_checkpoints(output: &Path, keep: u64) -> anyhow::Result<()> {
    let all = complete_checkpoints(output)?;
    let old = all.len().saturating_sub(keep.try_into().unwrap_or(usize::MAX));
    for dir in &all[..old] {
        std::fs::remove_dir_all(dir).with_context(|| format!("keep_checkpoints: cannot remove {}", dir.display()))?;
    }
    Ok(())
}

/// A checkpoint is a Hugging Face folder like `final/` (weights, config, the snapshot's tokenizer
/// and template, so it can be evaluated or prompted as it was trained, as transformers' Trainer
/// saves its checkpoints) plus what resuming needs: the optimizer's moments and the trainer state.
pub fn save_checkpoint<B: AutodiffBackend>(
    output: &Path,
    model: &Llama<B>,
    tok: &ChatTokenizer,
    opt: &AdamW<B::InnerBackend>,
    state: &TrainerState,
    base_model: &Path,
) -> anyhow::Result<PathBuf> {
    let final_dir = checkpoint_dir(output, state.step);
    // What a killed run left while writing another step (a resume may checkpoint other steps);
    // before this save, whose disk it may need.
    schemas::snapshot::remove_all_leftovers(&output.join("checkpoints"));
    publish_dir(&final_dir, |tmp| {
        save_model_folder(tmp, model, tok, &base_model.display().to_string())?;
        write_safetensors(tmp.join(OPTIMIZER_FILE), &opt.state_to_host())?;
        schemas::write_atomic(&tmp.join(STATE_FILE), (serde_json::to_string_pretty(state)? + "\n").as_bytes())
    })?;
    Ok(final_dir)
}

pub const TRAINING_FILE: &str = "training.json";

/// The tokenizer a trained model is saved with: the snapshot's ([`ChatTokenizer::from_snapshot`]).
/// Read before training, so that a snapshot missing it fails then.
pub fn snapshot_tokenizer(snapshot_dir: &Path, info: &TokenizerInfo) -> anyhow::Result<ChatTokenizer> {
    let tok = ChatTokenizer::from_snapshot(snapshot_dir, info)?;
    if tok.begin_token_unknown() {
        // Snapshots from before the begin token was recorded, or from a `tokenizer_json` recipe
        // that says there is none: transformers will render it empty, as the rows were.
        tracing::warn!(
            "snapshot {} records no begin token for its template's `bos_token`, so final/'s tokenizer_config.json names none \
             (a snapshot built before begin tokens were recorded: rebuild it; or a recipe with `tokenizer.bos_token: \"\"`)",
            snapshot_dir.display()
        );
    }
    Ok(tok)
}

/// Where a trained model came from, written beside its weights (`final/training.json`): with the
/// train snapshot's manifest (and, for rollouts, theirs) it links a checkpoint back to its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub base_model: String,
    pub base_model_sha256: String,
    pub snapshot: String,
    pub snapshot_id: String,
    pub steps: u64,
    pub recipe: TrainRecipe,
    pub tool: String,
    /// What computed the last steps (see [`TrainerState::engine`]).
    #[serde(default)]
    pub engine: String,
    /// The adapter folder LoRA started from, as resolved, and its sha256 (`lora.from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_from_sha256: Option<String>,
}

/// The trained model as a Hugging Face folder at `dir`, with the tokenizer and chat template of
/// the snapshot it was trained on (`tokenizer.json`, `chat_template.jinja`, and a
/// `tokenizer_config.json` naming the end-of-turn, padding and begin tokens, which transformers 4 and
/// 5 and `trainer generate` read) and its [`Provenance`].
pub fn save_final<B: AutodiffBackend>(dir: &Path, model: &Llama<B>, tok: &ChatTokenizer, provenance: &Provenance) -> anyhow::Result<()> {
    publish_dir(dir, |tmp| {
        save_model_folder(tmp, model, tok, &provenance.base_model)?;
        schemas::write_atomic(&tmp.join(TRAINING_FILE), (serde_json::to_string_pretty(provenance)? + "\n").as_bytes())
    })
}

/// Weights (LoRA adapters merged), `config.json` (its `eos_token_id` naming the end-of-turn token
/// too) and the tokenizer files: what `final/` and every checkpoint hold; with LoRA, the adapters
/// alone in [`ADAPTER_DIR`] too, naming `base_model`. In a folder of its own: transformers would
/// take a folder holding `adapter_config.json` for an adapter and load its base instead.
fn save_model_folder<B: AutodiffBackend>(dir: &Path, model: &Llama<B>, tok: &ChatTokenizer, base_model: &str) -> anyhow::Result<()> {
    let mut checkpoint = model.to_checkpoint();
    checkpoint.config.add_eos_token_id(tok.eos_id());
    save_hf(dir, &checkpoint)?;
    if let Some(lora) = &model.lora {
        model_files::lora::write_adapter(&dir.join(ADAPTER_DIR), lora, &model.adapters(), base_model)?;
    }
    tok.save_hf_files(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_checkpoint_is_the_highest_complete_step() {
        let out = tempfile::tempdir().unwrap();
        for (step, complete) in [(999_999, true), (1_000_000, true), (1_000_001, false), (7, true)] {
            let dir = checkpoint_dir(out.path(), step);
            std::fs::create_dir_all(&dir).unwrap();
            if complete {
                std::fs::write(dir.join(STATE_FILE), "{}").unwrap();
            }
        }
        std::fs::create_dir_all(out.path().join("checkpoints").join("step-notanumber")).unwrap();
        assert_eq!(latest_checkpoint(out.path()).unwrap(), Some(checkpoint_dir(out.path(), 1_000_000)));

        // Pruning keeps the newest complete ones by step and leaves other folders alone.
        prune_checkpoints(out.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(out.path().join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["step-1000000", "step-1000001", "step-999999", "step-notanumber"]);
        prune_checkpoints(out.path(), 1).unwrap();
        assert_eq!(complete_checkpoints(out.path()).unwrap(), [checkpoint_dir(out.path(), 1_000_000)]);
    }
}
