//! `trainer`: fine-tune Llama-family models on rectify snapshots with SFT or DFT, score
//! snapshots with a reference model, draw training curves (`curves`), and front evaluation (`eval`,
//! `probs`, `generate`).

use anyhow::Context;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Parser, Subcommand, ValueEnum};
use eval::benchmark::{load_benchmark, Benchmark};
use eval::report::{markdown, write_summary, BenchSummary, EvalConfig, Summary};
use model::generate::{stop_ids, Generator, Request};
use model::sampling::Sampling;
use model::Llama;
use schemas::train::TrainRecipe;
use std::path::PathBuf;
use std::process::ExitCode;
use trainer::train::Run;

#[derive(Parser)]
#[command(name = "trainer", version, about = "SFT and DFT on packed rectify snapshots (Llama, SmolLM2, Qwen2, Qwen3)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Device {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda,
}

/// Decoding settings shared by `generate` and `eval`.
#[derive(Args, Clone, Copy)]
struct SamplingArgs {
    /// 0 is greedy decoding (ties go to the lowest token id).
    #[arg(long, default_value_t = 0.0, value_parser = temperature, allow_negative_numbers = true)]
    temperature: f32,
    /// Nucleus sampling: keep the most probable tokens whose probabilities sum to at least P
    /// (1 keeps them all).
    #[arg(long, default_value_t = 1.0, value_parser = top_p)]
    top_p: f32,
    /// 0 keeps the whole vocabulary.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Seed of the sampling streams (each prompt and sample draws from its own stream).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// A message with some text in it.
fn not_blank(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("is empty".into())
    } else {
        Ok(s.to_string())
    }
}

impl SamplingArgs {
    fn with_budget(self, max_new_tokens: usize) -> Sampling {
        Sampling { temperature: self.temperature, top_p: self.top_p, top_k: self.top_k, max_new_tokens, seed: self.seed }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train as a YAML recipe says; flags override the recipe.
    Train {
        /// A train recipe (YAML), e.g. datasets/recipes/train/default.yaml.
        #[arg(long)]
        recipe: PathBuf,
        /// Continue from the newest checkpoint in the output folder.
        #[arg(long)]
        resume: bool,
        /// Where the model runs (cuda needs a `--features cuda` build: `make build-cuda`).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        /// The objective: sft, dft or iwsft (iwsft needs a scored snapshot).
        #[arg(long, value_name = "sft|dft|iwsft")]
        loss: Option<schemas::train::LossKind>,
        /// Peak learning rate (linear warmup, then --lr-schedule).
        // A negative value is read as a value (and refused by the recipe check, by name), not
        // as an unknown flag.
        #[arg(long, allow_negative_numbers = true)]
        lr: Option<f64>,
        /// After the warmup: cosine or linear decay towards 0 (reached one step past the last),
        /// or constant at the peak.
        #[arg(long, value_name = "cosine|linear|constant")]
        lr_schedule: Option<schemas::train::LrSchedule>,
        /// Optimizer steps (replaces the recipe's `steps` or `epochs`).
        #[arg(long, conflicts_with = "epochs")]
        steps: Option<u64>,
        /// Passes over the snapshot's rows, fractions allowed (replaces `steps` or `epochs`).
        #[arg(long)]
        epochs: Option<f64>,
        /// Tokens per optimizer step, rounded up to whole packed rows.
        #[arg(long)]
        batch_tokens: Option<usize>,
        /// Seed of the data order (recorded in checkpoints and training.json).
        #[arg(long)]
        seed: Option<u64>,
        /// Save a resumable checkpoint every N steps (and after the last).
        #[arg(long)]
        checkpoint_every: Option<u64>,
        /// Keep only the newest N checkpoints, as the recipe's `keep_checkpoints` (default: all).
        #[arg(long, value_name = "N")]
        keep_checkpoints: Option<u64>,
        /// Per-layer activation recompute, as the recipe's `recompute`: `all` (the default when
        /// given bare), `none`, or a number of blocks (the first ones). Less memory, slower.
        #[arg(long, value_name = "BLOCKS", num_args = 0..=1, default_missing_value = "all")]
        recompute: Option<schemas::train::Recompute>,
        /// Relative to the current folder (recipe paths are relative to the recipe).
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// GGUF file, Hugging Face folder or .safetensors to start from.
        #[arg(long)]
        model: Option<PathBuf>,
        /// A `train` snapshot folder (`pipeline build`).
        #[arg(long)]
        snapshot: Option<PathBuf>,
        /// A `train` snapshot of held-out rows whose loss is measured during training, into
        /// validation.jsonl (the recipe's `validation_snapshot`).
        #[arg(long)]
        validation_snapshot: Option<PathBuf>,
        /// Steps between held-out measurements (default: checkpoint_every).
        #[arg(long, value_name = "N")]
        validation_every: Option<u64>,
        /// Measure no held-out snapshot, whatever the recipe names.
        #[arg(long, conflicts_with_all = ["validation_snapshot", "validation_every"])]
        no_validation: bool,
        /// Write no checkpoints and no final model, only metrics.jsonl (and validation.jsonl
        /// with a held-out snapshot; speed measurements pass --no-validation too).
        #[arg(long)]
        no_save: bool,
    },
    /// Complete one chat prompt (chat template applied), for a quick look at a model.
    Generate {
        /// GGUF file, Hugging Face folder or rectify checkpoint.
        #[arg(long)]
        model: PathBuf,
        /// The user message.
        #[arg(long, value_parser = not_blank)]
        prompt: String,
        /// New tokens at most per completion (fewer when a stop token comes first).
        #[arg(long, default_value_t = 256, value_parser = at_least_one)]
        max_new_tokens: usize,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Completions to draw (each from its own random stream).
        #[arg(long, default_value_t = 1, value_parser = at_least_one)]
        samples: usize,
        /// A system message instead of the template's default.
        #[arg(long)]
        system: Option<String>,
        /// Tokenizer + template source when the model's own cannot be used: a GGUF file, or a
        /// Hugging Face folder (tokenizer.json with chat_template.jinja or tokenizer_config.json).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// A chat-template variable, `NAME=VALUE` (repeatable), as a recipe's
        /// `tokenizer.template_vars`: `--template-var enable_thinking=false` for Qwen3. VALUE is
        /// read as JSON (`false`, `3`, `"x"`), else as a string.
        #[arg(long = "template-var", value_name = "NAME=VALUE", value_parser = template_var)]
        template_vars: Vec<(String, serde_json::Value)>,
        /// One JSON line per completion (`prompt`, `prompt_ids`, `ids` with the stop token,
        /// `finish`, `text`) instead of the text, for comparing with other implementations.
        #[arg(long)]
        json: bool,
        /// Where the model runs (cuda needs a `--features cuda` build: `make build-cuda`).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
    },
    /// Evaluate a model on benchmark snapshots: Average@K, pass@K, every sample in results/.
    Eval {
        /// GGUF file or Hugging Face folder (e.g. runs/dft/final).
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated benchmarks: gsm8k, math500, aime24, amc23, minerva, olympiadbench,
        /// humaneval, mbpp, mbpp_validation, any snapshot in --snapshots by name, a snapshot
        /// folder given as a path (with a `/`), or `all` (every snapshot in --snapshots).
        #[arg(long, value_delimiter = ',', required = true)]
        bench: Vec<String>,
        /// Where the evaluation snapshots are (`scripts/eval_snapshots.sh BENCH` or `make data-eval`
        /// builds them).
        #[arg(long, default_value = eval::benchmark::DEFAULT_EVAL_DIR)]
        snapshots: PathBuf,
        /// K: samples per prompt.
        #[arg(long, default_value_t = 1, value_parser = at_least_one)]
        samples: usize,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// New tokens at most per completion; a completion cut there counts as truncated.
        #[arg(long, default_value_t = 512, value_parser = at_least_one)]
        max_new_tokens: usize,
        /// Only the first N prompts of each benchmark.
        #[arg(long)]
        limit: Option<usize>,
        /// Sequences in flight at once (continuous batching on CPU, where greedy results do not
        /// depend on it; on CUDA, left-padded batches, whose shape can change the last bits of
        /// logits). 8 is the fastest measured on 2 cores (README: Evaluation).
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Results folder: summary.json, summary.md, results/<bench>.jsonl [default:
        /// runs/eval/NAME, NAME the model's file or folder name, or RUN for runs/RUN/final, as
        /// `make eval` names it: each model its own folder].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the model runs (cuda needs a `--features cuda` build: `make build-cuda`).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
    },
    /// Rejection sampling, first half: K completions per question of a `prompts` snapshot built
    /// from training sources, each verified (math verifier, code sandbox), written as a rollouts
    /// snapshot. Resumable: run the same command again after an interruption. Defaults follow
    /// the DFT paper's offline-RL setting (K = 4, temperature 1.0, top-p 1.0).
    Sample {
        /// GGUF file, Hugging Face folder or rectify checkpoint (e.g. runs/dft/final).
        #[arg(long)]
        model: PathBuf,
        /// The questions: a `prompts` snapshot decontaminated against the benchmarks.
        #[arg(long)]
        prompts: PathBuf,
        /// The rollouts snapshot. Reused when it holds this run's cache key (model hash,
        /// prompts snapshot id, questions, K, sampling settings, batch and chunk sizes, engine,
        /// verifier, stop ids); another key needs --force, and the error names what differs.
        #[arg(long)]
        out: PathBuf,
        /// Replace OUT when it holds another run's samples.
        #[arg(long)]
        force: bool,
        /// K: completions per question.
        #[arg(long, default_value_t = 4, value_parser = at_least_one)]
        samples: usize,
        /// 0 is greedy decoding.
        #[arg(long, default_value_t = 1.0, value_parser = temperature, allow_negative_numbers = true)]
        temperature: f32,
        /// Nucleus sampling: keep the most probable tokens whose probabilities sum to at least P.
        #[arg(long, default_value_t = 1.0, value_parser = top_p)]
        top_p: f32,
        /// 0 keeps the whole vocabulary.
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// New tokens at most per completion; a completion cut there is kept as truncated.
        #[arg(long, default_value_t = 512, value_parser = at_least_one)]
        max_new_tokens: usize,
        /// Seed of the sampling streams (recorded in the rollouts manifest).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Only the first N questions of the snapshot.
        #[arg(long)]
        limit: Option<usize>,
        /// Sequences in flight at once (continuous batching: a finished one is replaced from
        /// the queue). On CPU the same seed gives the same samples at any batch size; on 2 cores
        /// decoding runs at about 195 new tokens/s from batch 8 up (README: Evaluation).
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Questions per resumable chunk of work (a chunk's K samples each are generated,
        /// then graded, then journaled).
        #[arg(long, default_value_t = 16)]
        chunk_questions: usize,
        /// Where the model runs (cuda needs a `--features cuda` build: `make build-cuda`).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
    },
    /// Compare evaluations side by side: one column per `summary.json` folder (`trainer eval
    /// --out`), Average@K per benchmark and the difference to the first, with its 95% interval
    /// (a paired bootstrap over the prompts) and `p=` (the exact sign test over the prompts whose
    /// results differ) where both results files hold the same prompts.
    Compare {
        /// Evaluation folders (or their summary.json), the baseline first.
        #[arg(required = true, num_args = 2..)]
        runs: Vec<PathBuf>,
        /// Column names in the same order (default: the folder names).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Also draw Average@K per benchmark as a bar chart (PNG), with 95% intervals as whiskers.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Also draw pass@k against k = 1, 2, 4, ... K per benchmark (PNG), one line per
        /// evaluation; for evaluations of K > 1 samples per prompt.
        #[arg(long)]
        pass_plot: Option<PathBuf>,
    },
    /// Decoding throughput: new tokens/s of batched KV-cache generation of a prompt snapshot's
    /// prompts, one batch per size, every sequence decoding exactly --new-tokens (no stop
    /// tokens). Prints one JSON line per run.
    BenchGenerate {
        /// GGUF file or Hugging Face folder.
        #[arg(long)]
        model: PathBuf,
        /// A benchmark name (looked up in --snapshots) or a `prompts` snapshot folder; its first
        /// prompts are used, starting over when a batch needs more.
        #[arg(long, default_value = "gsm8k")]
        prompts: String,
        /// Where the evaluation snapshots are.
        #[arg(long, default_value = eval::benchmark::DEFAULT_EVAL_DIR)]
        snapshots: PathBuf,
        /// Comma-separated batch sizes.
        #[arg(long, value_delimiter = ',', default_value = "1,8", value_parser = at_least_one)]
        batch: Vec<usize>,
        /// At least 1: the first new token times the prefill, the rest the decoding.
        #[arg(long, default_value_t = 64, value_parser = at_least_one)]
        new_tokens: usize,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Timed runs per batch size (on a GPU after an untimed pass that compiles the kernels).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Also write the prompt ids of the largest batch, one JSON array per line, so that
        /// another framework can decode the same prompts.
        #[arg(long)]
        prompts_out: Option<PathBuf>,
        /// Where the model runs (cuda needs a `--features cuda` build: `make build-cuda`).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
    },
    /// Write the first rows of a train snapshot as JSON lines (`row`, `input_ids`,
    /// `position_ids`, `segment_ids`, `loss_mask`) for tools outside rectify; with --model also
    /// `logprobs`, the model's log-probability of every token in the `ref_logprobs` convention.
    Rows {
        /// A `train` snapshot folder.
        #[arg(long)]
        snapshot: PathBuf,
        /// How many rows, from the first (0: all).
        #[arg(long, default_value_t = 0)]
        rows: usize,
        /// GGUF file or Hugging Face folder to score the rows with.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Where the model runs (cuda needs a `--features cuda` build: `make build-cuda`).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        /// The JSON-lines file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check answers without a model: each JSONL line with `gold` and `prediction` (a final
    /// answer or a whole model output) is written back with `extracted` and `correct`. (An
    /// evaluation's results files are graded again by running the same `trainer eval` again.)
    VerifyAnswers {
        file: PathBuf,
        /// Where to write; default: FILE with `.verified.jsonl`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Benchmark name: `gsm8k*` allows the last-number fallback, others need an explicit answer.
        #[arg(long, default_value = "math")]
        benchmark: String,
    },
    /// Fill a train snapshot's `ref_logprobs` with a reference model's log-probability of every
    /// next token (packed rows, block-diagonal attention) and write a new snapshot. Resumable:
    /// run the same command again after an interruption.
    Score {
        /// The reference model: GGUF file or Hugging Face folder.
        #[arg(long)]
        model: PathBuf,
        /// The `train` snapshot to score.
        #[arg(long)]
        snapshot: PathBuf,
        /// The scored snapshot; default: SNAPSHOT with `-scored` appended.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
        /// Rows per resumable chunk of work.
        #[arg(long, default_value_t = 16)]
        chunk_rows: usize,
        /// Where the model runs (cuda needs a `--features cuda` build: `make build-cuda`).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
    },
    /// Histogram (PNG + CSV) of the probability each model gives the loss-mask tokens of a few
    /// rows of a train snapshot: SFT pushes them toward 1, DFT polarises them.
    Probs {
        /// A model (GGUF file or Hugging Face folder); repeat to overlay several.
        #[arg(long = "model", required = true)]
        models: Vec<PathBuf>,
        /// Legend label of the model in the same position (default: a short name from its path).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// The `train` snapshot whose rows are scored.
        #[arg(long)]
        snapshot: PathBuf,
        /// Rows to score, spread evenly over the snapshot (0: all). 8 rows: ~45 s per model on 2 cores.
        #[arg(long, default_value_t = 8)]
        rows: usize,
        /// Equal-width bins over [0, 1].
        #[arg(long, default_value_t = 20)]
        bins: usize,
        /// Logarithmic y axis (shows the sparse middle bins).
        #[arg(long)]
        log_y: bool,
        /// The PNG; FILE.csv and FILE.summary.csv are written beside it.
        #[arg(long)]
        out: PathBuf,
        /// Where the models run (cuda, one row at a time, needs a `--features cuda` build).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
    },
    /// Training curves (PNG) of one or more runs, one line each: objective, cross-entropy, mean
    /// target-token probability, gradient norm, learning rate and tokens/s per step, and on a
    /// scored snapshot log p - log p_ref. `trainer
    /// train` keeps its own run's as curves.png; this overlays runs (SFT against DFT).
    Curves {
        /// A `trainer train` output folder, or its metrics.jsonl; several to overlay them.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Legend label of the run in the same position (default: the run folder's name).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// The PNG to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a model (GGUF or safetensors) as a Hugging Face folder: model.safetensors +
    /// config.json, and the tokenizer and chat template (tokenizer.json, chat_template.jinja,
    /// tokenizer_config.json) from the GGUF or the source folder. Weights are written in f32
    /// (a GGUF dequantised). With --adapter, a PEFT LoRA adapter is merged into the weights first
    /// (PEFT's merge_and_unload), so a model trained with LoRA elsewhere can be evaluated, scored
    /// or trained on here; a tokenizer saved beside the adapter is the export's.
    Export {
        /// GGUF file, Hugging Face folder, .safetensors or rectify checkpoint (with --adapter:
        /// the base model the adapter was trained on).
        #[arg(long)]
        model: PathBuf,
        /// A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) to merge
        /// into the model's weights.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// The Hugging Face folder to write.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    progress::init_logging();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--device cuda` on a build without it: clap alone would suggest `cpu` as if `cuda`
        // were a typo. (The value list stays as clap writes it: scripts read it from --help.)
        Err(e) if !cfg!(feature = "cuda") && asks_for_cuda(&e) => {
            eprintln!("error: --device cuda: this trainer was built without CUDA; build it with `make build-cuda` (cargo's `--features trainer/cuda`, CUDA 13 with NVRTC at run time)");
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether clap refused `cuda` as the value of `--device` (as it names them in its error).
fn asks_for_cuda(e: &clap::Error) -> bool {
    use clap::error::{ContextKind, ContextValue};
    let said = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => s.as_str(),
        _ => "",
    };
    said(ContextKind::InvalidValue) == "cuda" && said(ContextKind::InvalidArg).starts_with("--device")
}

fn temperature(s: &str) -> Result<f32, String> {
    Sampling::check_temperature(s.parse::<f32>().map_err(|_| format!("expected a number, got `{s}`"))?)
}

fn top_p(s: &str) -> Result<f32, String> {
    Sampling::check_top_p(s.parse::<f32>().map_err(|_| format!("expected a number, got `{s}`"))?)
}

/// `NAME=VALUE` of `--template-var`: VALUE as JSON where it parses (and Python's `True`,
/// `False`, `None`), else the string itself.
fn template_var(arg: &str) -> Result<(String, serde_json::Value), String> {
    let (name, value) = arg.split_once('=').ok_or_else(|| format!("`{arg}` is not NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("`{arg}` has no name before `=`"));
    }
    // Python's spellings, as `apply_chat_template(enable_thinking=False)` writes them.
    let value = match value {
        "True" => serde_json::Value::Bool(true),
        "False" => serde_json::Value::Bool(false),
        "None" => serde_json::Value::Null,
        _ => serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::from(value)),
    };
    Ok((name.to_string(), value))
}

/// The `--template-var` values by name; a name given twice is an error, not last-wins.
fn unique_template_vars(vars: Vec<(String, serde_json::Value)>) -> anyhow::Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let mut out = std::collections::BTreeMap::new();
    for (name, value) in vars {
        if out.insert(name.clone(), value).is_some() {
            anyhow::bail!("--template-var {name} is given twice");
        }
    }
    Ok(out)
}

/// A count of samples or new tokens: 0 samples would make every rate 0/0, and 0 new tokens would
/// generate nothing and report it as a result.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got `{s}`")),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train {
            recipe,
            resume,
            device,
            loss,
            lr,
            lr_schedule,
            steps,
            epochs,
            batch_tokens,
            seed,
            checkpoint_every,
            keep_checkpoints,
            recompute,
            output_dir,
            model,
            snapshot,
            validation_snapshot,
            validation_every,
            no_validation,
            no_save,
        } => {
            let (mut r, unset) = TrainRecipe::load_with_unset(&recipe)?;
            let given = [
                ("loss", loss.is_some()),
                ("lr", lr.is_some()),
                ("lr_schedule", lr_schedule.is_some()),
                ("batch_tokens", batch_tokens.is_some()),
                ("seed", seed.is_some()),
            ];
            if let Some(l) = loss {
                r.loss = l;
            }
            if let Some(v) = lr {
                r.lr = v;
            }
            if let Some(v) = lr_schedule {
                r.lr_schedule = v;
            }
            if steps.is_some() || epochs.is_some() {
                r.steps = steps;
                r.epochs = epochs;
            }
            if let Some(v) = batch_tokens {
                r.batch_tokens = v;
            }
            if let Some(v) = seed {
                r.seed = v;
            }
            if let Some(v) = checkpoint_every {
                r.checkpoint_every = v;
            }
            if keep_checkpoints.is_some() {
                r.keep_checkpoints = keep_checkpoints;
            }
            if let Some(v) = recompute {
                r.recompute = v;
            }
            let cwd = |p: PathBuf| std::path::absolute(p).map(|p| p.display().to_string());
            if let Some(p) = output_dir {
                r.output_dir = cwd(p)?;
            }
            if let Some(p) = model {
                r.model = cwd(p)?;
            }
            if let Some(p) = snapshot {
                r.snapshot = cwd(p)?;
            }
            if let Some(p) = validation_snapshot {
                r.validation_snapshot = Some(cwd(p)?);
            }
            if validation_every.is_some() {
                r.validation_every = validation_every;
            }
            if no_validation {
                (r.validation_snapshot, r.validation_every) = (None, None);
            }
            // `steps` and `epochs` are one choice, checked by validation; the others get the
            // paper's defaults, which the user should see were not their own.
            let defaulted: Vec<String> = unset
                .into_iter()
                .filter(|k| !matches!(*k, "steps" | "epochs") && !given.iter().any(|(g, set)| g == k && *set))
                .filter(|k| *k != "iwsft_clip" || r.loss == schemas::train::LossKind::Iwsft)
                .map(|k| format!("{k} {}", r.math_value(k)))
                .collect();
            if !defaulted.is_empty() {
                tracing::warn!("{} leaves these to their defaults: {}", recipe.display(), defaulted.join(", "));
            }
            let mut run = Run::new(r, &recipe)?;
            run.save = !no_save;
            run.engine = burn_engine(device);
            match device {
                Device::Cpu => train_on::<Autodiff<Flex>>(&run, resume, rayon::current_num_threads(), &Default::default()),
                #[cfg(feature = "cuda")]
                Device::Cuda => {
                    cuda_ready()?;
                    train_on::<Autodiff<burn::backend::Cuda>>(&run, resume, 1, &Default::default())
                }
            }
        }
        Command::Generate { model, prompt, max_new_tokens, sampling, samples, system, tokenizer, template_vars, json, device } => {
            device_ready(device)?;
            // Before the tokenizer is read from it: a wrong path is the error, not the tokenizer
            // it lacks.
            if tokenizer.is_none() {
                model_files::checkpoint::check_model_path(&model)?;
            }
            let tok_source = tokenizer.clone().unwrap_or_else(|| model.clone());
            let tok = model_files::tokenizer::ChatTokenizer::for_model(&tok_source, system)
                .and_then(|t| {
                    // The hint only where the tokenizer is absent: a damaged file's own message says more.
                    t.ok_or_else(|| anyhow::anyhow!("no tokenizer.json beside the model (pass one with --tokenizer FILE.gguf or FOLDER)"))
                })
                .with_context(|| format!("reading tokenizer and chat template from {}", tok_source.display()))?
                .with_template_vars(unique_template_vars(template_vars)?)?;
            let (prompt_text, prompt_ids) = tok.encode_prompt(&prompt)?;
            let stop = stop_ids(&tok);
            // A model that carries its own tokenizer takes another only where both agree on the
            // ids of this prompt and the stop tokens.
            if let (Some(source), true) = (tokenizer.as_ref(), model_files::vocab::carries_tokenizer(&model)) {
                if let Some(own) = model_files::vocab::ModelTokens::of(&model)? {
                    own.check_tokenizer(tok.tokenizer(), source, prompt_ids.iter().chain(&stop).copied())?;
                }
            }
            let m = load_generator(&model, device)?;
            m.config().check_prompt_fits(prompt_ids.len())?;
            let params = sampling.with_budget(max_new_tokens);
            note_suggested_sampling(&model, &params);
            let requests: Vec<Request> = (0..samples as u64).map(|stream| Request { prompt: &prompt_ids, stream }).collect();
            for (i, c) in m.complete(&requests, &params, &stop, requests.len(), &|_, _| {}).iter().enumerate() {
                if json {
                    let line = serde_json::json!({ "prompt": prompt_text, "prompt_ids": prompt_ids, "ids": c.ids,
                        "finish": c.finish, "text": tok.decode(c.text_ids()) });
                    println!("{line}");
                    continue;
                }
                if samples > 1 {
                    println!("--- sample {i} ({:?}, {} tokens)", c.finish, c.ids.len());
                }
                println!("{}", tok.decode(c.text_ids()));
            }
            Ok(())
        }
        Command::Eval { model, bench, snapshots, samples, sampling, max_new_tokens, limit, batch_size, out, device } => {
            device_ready(device)?;
            // Before its tokens are read: a wrong path is the error, not the tokenizer it lacks.
            model_files::checkpoint::check_model_path(&model)?;
            let out = out.unwrap_or_else(|| eval::report::default_out(&model));
            let bench = eval::benchmark::expand_all(&bench, &snapshots)?;
            let benches = bench.iter().map(|b| load_benchmark(b, &snapshots)).collect::<anyhow::Result<Vec<_>>>()?;
            if let Some(tokens) = model_files::vocab::ModelTokens::of(&model)? {
                benches.iter().try_for_each(|b| b.check_model_tokens(&tokens))?;
            }
            eval::benchmark::warn_on_prompt_format(&model, &benches.iter().collect::<Vec<_>>());
            // Results are filed by snapshot folder name (results/<name>.jsonl).
            for (i, b) in benches.iter().enumerate() {
                if let Some(j) = benches[..i].iter().position(|a| a.name == b.name) {
                    anyhow::bail!(
                        "--bench `{}` and `{}` are both `{}` ({} and {}): results would overwrite each other; name each benchmark once",
                        bench[j],
                        bench[i],
                        b.name,
                        benches[j].dir.display(),
                        b.dir.display()
                    );
                }
            }
            if samples > 1 && sampling.temperature == 0.0 {
                tracing::warn!("{samples} greedy samples per prompt are identical; pass --temperature for Average@K");
            }
            let config = EvalConfig { samples, sampling: sampling.with_budget(max_new_tokens), limit, batch_size, engine: engine(device) };
            let summary = Summary {
                model: model.display().to_string(),
                model_sha256: model_files::checkpoint::model_hash(&model)?.0,
                verifier_version: verify::grade::VERSION.to_string(),
                config,
                benchmarks: vec![],
            };
            note_suggested_sampling(&model, &summary.config.sampling);
            let summary = eval_on(&model, device, &benches, summary, &out)?;
            print!("{}", markdown(&summary));
            println!("\nwrote {}/summary.md, summary.json and results/<bench>.jsonl", out.display());
            Ok(())
        }
        Command::Sample {
            model,
            prompts,
            out,
            force,
            samples,
            temperature,
            top_p,
            top_k,
            max_new_tokens,
            seed,
            limit,
            batch_size,
            chunk_questions,
            device,
        } => {
            let sampling = Sampling { temperature, top_p, top_k, max_new_tokens, seed };
            let opts = trainer::sample::SampleOptions {
                model,
                prompts,
                out,
                force,
                samples,
                sampling,
                limit,
                batch_size,
                chunk_questions,
                engine: engine(device),
            };
            device_ready(device)?;
            note_suggested_sampling(&opts.model, &opts.sampling);
            let s = trainer::sample::sample(&opts, &|path| load_generator(path, device))?;
            let r = s.manifest.rollouts.as_ref().expect("a rollouts snapshot");
            if s.reused {
                println!("{} already holds these rollouts (cache key {}): nothing to sample", opts.out.display(), r.cache_key);
            } else {
                let resumed = if s.resumed_questions > 0 {
                    format!(", {} questions resumed from an earlier run", s.resumed_questions)
                } else {
                    String::new()
                };
                println!(
                    "sampled {} questions x {}{resumed}: {} new tokens in {:.1}s, {:.0} tokens/s",
                    s.questions,
                    r.key.samples_per_question,
                    s.new_tokens,
                    s.seconds,
                    s.tokens_per_second()
                );
            }
            println!(
                "{} samples: {} correct ({:.1}%), {} truncated; snapshot {} (cache key {}) at {}",
                r.samples,
                r.correct,
                100.0 * r.correct as f64 / r.samples.max(1) as f64,
                r.truncated,
                s.manifest.snapshot_id,
                r.cache_key,
                opts.out.display()
            );
            Ok(())
        }
        Command::Compare { runs, labels, plot, pass_plot } => {
            let same_file = |a: &PathBuf, b: &PathBuf| std::path::absolute(a).ok() == std::path::absolute(b).ok();
            if let (Some(a), Some(b)) = (&plot, &pass_plot) {
                if same_file(a, b) {
                    anyhow::bail!("--plot and --pass-plot are both {}: give each chart its own file", a.display());
                }
            }
            let evals = labelled(&runs, &labels, eval::report::load_evaluation)?;
            print!("{}", eval::report::compare_markdown(&evals));
            if let Some(path) = plot {
                let chart = eval::report::compare_chart(&evals);
                anyhow::ensure!(!chart.categories.is_empty(), "{}: no benchmark to plot", runs[0].display());
                chart.render().0.save_png(&path)?;
                eprintln!("wrote {}", path.display());
            }
            if let Some(path) = pass_plot {
                let figure = eval::report::pass_at_k_figure(&evals);
                if figure.panels.is_empty() {
                    let sampled: Vec<String> = evals.iter().filter(|e| e.summary.config.samples > 1).map(|e| e.label.clone()).collect();
                    anyhow::bail!(
                        "no pass@k curve to draw for the benchmarks of {}: {}",
                        runs[0].display(),
                        if sampled.is_empty() {
                            "every evaluation drew one sample per prompt (evaluate with --samples above 1)".to_string()
                        } else {
                            format!(
                                "{} drew several samples, but before curves were recorded: run its `trainer eval` again with the same arguments (it sums up the stored verdicts again, generating nothing)",
                                sampled.join(", ")
                            )
                        }
                    );
                }
                figure.render().0.save_png(&path)?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::BenchGenerate { model, prompts, snapshots, batch, new_tokens, sampling, repeat, prompts_out, device } => {
            model_files::checkpoint::check_model_path(&model)?;
            let bench = load_benchmark(&prompts, &snapshots)?;
            anyhow::ensure!(!bench.prompts.is_empty(), "{} holds no prompts", bench.dir.display());
            if let Some(tokens) = model_files::vocab::ModelTokens::of(&model)? {
                bench.check_model_tokens(&tokens)?;
            }
            let largest = batch.iter().copied().max().unwrap_or(1);
            if let Some(path) = &prompts_out {
                let lines: String =
                    eval::throughput::prompts(&bench, largest).iter().map(|p| format!("{}\n", serde_json::json!(p))).collect();
                schemas::write_atomic(path, lines.as_bytes())?;
            }
            let params = sampling.with_budget(new_tokens);
            let runs: Vec<(usize, usize)> = batch.iter().flat_map(|&b| (0..repeat.max(1)).map(move |r| (b, r))).collect();
            device_ready(device)?;
            bench_generate_on(&model, device, &bench, &params, &runs)
        }
        Command::Rows { snapshot, rows, model, device, out } => {
            let snap = schemas::snapshot::load_snapshot(&snapshot)?;
            let n = if rows == 0 { snap.rows.len() } else { rows.min(snap.rows.len()) };
            if rows > n {
                tracing::warn!("--rows {rows}: {} holds {n} rows; all of them are written", snapshot.display());
            }
            let picked: Vec<&schemas::snapshot::Row> = snap.rows[..n].iter().collect();
            if let Some(m) = &model {
                model_files::vocab::check_model_tokens(m, &snapshot, snap.token_ids())?;
            }
            let scored = match &model {
                None => None,
                Some(m) => Some(match device {
                    Device::Cpu => rows_logprobs_on::<Flex>(m, &picked, snap.manifest.tokenizer.vocab_size, &Default::default())?,
                    #[cfg(feature = "cuda")]
                    Device::Cuda => on_gpu(|| {
                        rows_logprobs_on::<burn::backend::Cuda>(m, &picked, snap.manifest.tokenizer.vocab_size, &Default::default())
                    })?,
                }),
            };
            let mut text = String::new();
            for (i, r) in picked.iter().enumerate() {
                let mut line = serde_json::json!({
                    "row": i, "input_ids": r.input_ids, "position_ids": r.position_ids,
                    "segment_ids": r.segment_ids, "loss_mask": r.loss_mask,
                });
                if let Some((lp, _)) = &scored {
                    line["logprobs"] = serde_json::json!(lp[i]);
                }
                text.push_str(&format!("{line}\n"));
            }
            schemas::write_atomic(&out, text.as_bytes())?;
            match model.as_ref().zip(scored.as_ref()) {
                Some((m, (_, secs))) => {
                    let tokens: usize = picked.iter().map(|r| r.segment_ids.iter().filter(|&&s| s != 0).count()).sum();
                    println!(
                        "wrote {n} rows with the log-probabilities of {} to {} ({tokens} tokens scored in {secs:.2} s, {:.0} tokens/s)",
                        m.display(),
                        out.display(),
                        tokens as f64 / secs
                    );
                }
                None => println!("wrote {n} rows to {}", out.display()),
            }
            Ok(())
        }
        Command::VerifyAnswers { file, out, benchmark } => {
            let out = out.unwrap_or_else(|| file.with_extension("verified.jsonl"));
            let opts = verify::math::ExtractOptions::for_benchmark(&benchmark);
            let s = verify::math::verify_jsonl(&file, &out, &opts)?;
            println!("{s:?}");
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Score { model, snapshot, out, force, chunk_rows, device } => {
            let out = match out {
                Some(out) => out,
                None => trainer::score::default_out(&snapshot)?,
            };
            let opts = trainer::score::ScoreOptions { model, snapshot, out, force, chunk_rows, engine: burn_engine(device) };
            let s = match device {
                Device::Cpu => trainer::score::score::<Flex>(&opts, &Default::default())?,
                // One row at a time on the GPU (`rows_logprobs` spreads rows over threads).
                #[cfg(feature = "cuda")]
                Device::Cuda => on_gpu(|| trainer::score::score::<burn::backend::Cuda>(&opts, &Default::default()))?,
            };
            let resumed = if s.resumed_rows > 0 { format!(", {} resumed from an earlier run", s.resumed_rows) } else { String::new() };
            println!("scored {} rows{resumed}: {} tokens in {:.1}s, {:.0} tokens/s", s.rows, s.tokens, s.seconds, s.tokens_per_second());
            println!("snapshot {} (parent {}) at {}", s.manifest.snapshot_id, snapshot_parent(&s.manifest), opts.out.display());
            Ok(())
        }
        Command::Probs { models, labels, snapshot, rows, bins, log_y, out, device } => {
            anyhow::ensure!(labels.len() <= models.len(), "{} --label for {} --model", labels.len(), models.len());
            let models = models.into_iter().enumerate().map(|(i, m)| (m, labels.get(i).cloned())).collect();
            let t0 = std::time::Instant::now();
            let opts = eval::probs::Options { models, snapshot, rows, bins, log_y, out };
            let (measured, written) = match device {
                Device::Cpu => eval::probs::run(&opts)?,
                #[cfg(feature = "cuda")]
                Device::Cuda => on_gpu(|| eval::probs::run_on::<burn::backend::Cuda>(&opts, &Default::default()))?,
            };
            for m in &measured {
                let s = eval::probs::summarize(&m.probs);
                println!(
                    "{}: {} tokens, mean p {:.3}, median p {:.3}, p < 0.1: {:.1}%, p > 0.9: {:.1}%",
                    m.label,
                    s.tokens,
                    s.mean,
                    s.median,
                    100.0 * s.below_0_1,
                    100.0 * s.above_0_9
                );
            }
            println!(
                "wrote {} in {:.1}s",
                written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Curves { runs, labels, out } => {
            let runs = labelled(&runs, &labels, trainer::curves::read_run)?;
            trainer::curves::write(&runs, &out)?;
            for r in &runs {
                println!("{}: {} steps from {}", r.label, r.steps.len(), r.metrics.display());
            }
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Export { model, adapter, out } => {
            if std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some()) {
                anyhow::bail!("{} is not empty: choose another --out, or remove it first", out.display());
            }
            let ckpt = match &adapter {
                None => model_files::checkpoint::load(&model)?,
                Some(dir) => merged_adapter(&model, dir)?,
            };
            // TRL and LLaMA-Factory save the tokenizer and chat template the adapter was trained
            // with beside it (an SFT run may have changed the template): those win over the base's.
            let beside_adapter =
                adapter.as_deref().map(model_files::checkpoint::model_folder).filter(|d| d.join("tokenizer.json").is_file());
            let adapters_own = beside_adapter.and_then(|dir| match model_files::tokenizer::ChatTokenizer::for_model(dir, None) {
                Ok(t) => {
                    tracing::info!("the tokenizer and chat template come from the adapter's folder {}", dir.display());
                    t
                }
                Err(e) => {
                    tracing::warn!("{}: its tokenizer cannot be read ({e:#}): the export takes the base model's", dir.display());
                    None
                }
            });
            // The weights are the export; a tokenizer that cannot be read (a base model without a
            // chat template) is left out with a word, as it was before exports carried one.
            let tok = adapters_own.or_else(|| {
                model_files::tokenizer::ChatTokenizer::for_model(&model, None).unwrap_or_else(|e| {
                    tracing::warn!("{}: the export has no tokenizer: {e:#}", model.display());
                    None
                })
            });
            schemas::snapshot::publish_dir(&out, |tmp| {
                model_files::checkpoint::save_hf(tmp, &ckpt)?;
                tok.as_ref().map_or(Ok(()), |t| t.save_hf_files(tmp))
            })?;
            let with = if tok.is_some() { ", config.json and the tokenizer" } else { " and config.json (no tokenizer beside the model)" };
            println!("wrote {} ({} tensors){with}", out.join("model.safetensors").display(), ckpt.tensors.len());
            Ok(())
        }
    }
}

/// `base` with the PEFT LoRA adapter in `dir` merged into its weights (`W + scale · B A`, with
/// DoRA each row then scaled by its factor, as the merged `final/` of a LoRA run holds them). The adapter's shapes must fit the base;
/// that it was trained on this base, not another of the same shapes, cannot be checked.
fn merged_adapter(base: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<model_files::checkpoint::Checkpoint> {
    if !dir.exists() {
        anyhow::bail!("--adapter {}: no such file or folder", dir.display());
    }
    // The adapter's weights file names its folder as well as the folder does.
    let dir = model_files::checkpoint::model_folder(dir);
    let (lora, adapters) = model_files::lora::read_adapter(dir)?;
    let named = model_files::lora::base_model(dir);
    let named_text = named.as_ref().map(|b| format!(" (the adapter names its base `{b}`)")).unwrap_or_default();
    if named.is_some_and(|n| model_files::lora::names_other_base(&n, base)) {
        tracing::warn!(
            "{}{named_text} is merged into {}: make sure it was trained on this model's weights (the shapes fit, which is all that can be checked)",
            dir.display(),
            base.display()
        );
    }
    let model = model::Llama::<Flex>::load(base, &Default::default())?
        .with_lora(&lora, &adapters)
        .with_context(|| format!("{}{named_text} does not fit {}", dir.display(), base.display()))?;
    tracing::info!("merging LoRA {} from {} into {}", lora.describe(), dir.display(), base.display());
    Ok(model.to_checkpoint())
}

/// Says where the sampling a model's `generation_config.json` suggests is not the run's: rectify
/// samples as its flags say, but a model's makers often evaluate it with their own settings.
fn note_suggested_sampling(model: &std::path::Path, sampling: &Sampling) {
    if let Some(flags) = model_files::generation_config::SuggestedSampling::of(model).and_then(|s| s.differs_from(sampling)) {
        tracing::info!("{}'s generation_config.json suggests {flags}; this run samples as its flags say", model.display());
    }
}

/// Loads each of `runs` with the `--label` in the same position, if one was given.
fn labelled<T>(
    runs: &[PathBuf],
    labels: &[String],
    load: impl Fn(&std::path::Path, Option<String>) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    anyhow::ensure!(labels.len() <= runs.len(), "{} --label for {} runs", labels.len(), runs.len());
    runs.iter().zip(distinct_labels(runs, labels)).map(|(r, l)| load(r, Some(l))).collect()
}

/// The labels of `runs`: those given, in order, then each folder's name (a run given as a file,
/// `metrics.jsonl` or `summary.json`, is its folder), with as many parent folders as it takes to
/// tell it from the others: `a/dft` and `b/dft`, not `dft` twice.
fn distinct_labels(runs: &[PathBuf], given: &[String]) -> Vec<String> {
    let folders: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let dir = if r.is_file() { r.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")) } else { r };
            let full = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            full.components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let label = |i: usize, depth: usize| match folders[i].len() {
        0 => runs[i].display().to_string(),
        n => folders[i][n - depth.min(n)..].join("/"),
    };
    let mut depth = vec![1; runs.len()];
    loop {
        let labels: Vec<String> = (0..runs.len()).map(|i| given.get(i).cloned().unwrap_or_else(|| label(i, depth[i]))).collect();
        let mut grew = false;
        for i in given.len()..runs.len() {
            let clash = labels.iter().enumerate().any(|(j, l)| j != i && *l == labels[i]);
            if clash && depth[i] < folders[i].len() {
                depth[i] += 1;
                grew = true;
            }
        }
        if !grew {
            return labels;
        }
    }
}

fn snapshot_parent(m: &schemas::Manifest) -> String {
    m.ref_logprobs.as_ref().map(|i| i.parent_snapshot_id.clone()).unwrap_or_default()
}

/// The model `eval`, `sample`, `generate` and `bench-generate` decode with: on CPU the host
/// decoder (`model::host`: continuous batching, weights streamed once per step for the whole
/// batch), on a GPU the Burn model.
fn load_generator(path: &std::path::Path, device: Device) -> anyhow::Result<Box<dyn Generator>> {
    Ok(match device {
        Device::Cpu => Box::new(model::HostDecoder::load(path)?),
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            let device = Default::default();
            Box::new(model::generate::BurnGenerator {
                model: Llama::<burn::backend::Cuda>::load(path, &device)?,
                device,
                greedy_on: model::generate::GreedyOn::Device,
                parallel_batches: false,
            })
        }
    })
}

/// What computes the logits on `device`, recorded with samples and results: two engines agree
/// in distribution, not in the last bits, so results of one are not reused for the other.
fn engine(device: Device) -> String {
    match device {
        Device::Cpu => model::HostDecoder::engine().to_string(),
        #[cfg(feature = "cuda")]
        Device::Cuda => burn_engine(device),
    }
}

/// What computes a Burn model's outputs on `device` (scoring runs the Burn model on CPU too).
fn burn_engine(device: Device) -> String {
    match device {
        Device::Cpu => "burn flex".to_string(),
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            let tf32 = std::env::var("RECTIFY_TF32").is_ok_and(|v| v == "1");
            format!("burn cuda, {} matmuls", if tf32 { "tf32" } else { "f32" })
        }
    }
}

/// Checks that `device` can run, before a command reads or writes anything (see [`cuda_ready`]).
fn device_ready(device: Device) -> anyhow::Result<()> {
    match device {
        Device::Cpu => Ok(()),
        #[cfg(feature = "cuda")]
        Device::Cuda => cuda_ready(),
    }
}

/// Runs `f`, which spreads rows over rayon threads, on the GPU one row at a time (a one-thread
/// pool): side-by-side rows only help a CPU.
#[cfg(feature = "cuda")]
fn on_gpu<T: Send>(f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    cuda_ready()?;
    rayon::ThreadPoolBuilder::new().num_threads(1).build()?.install(f)
}

/// Runs one small kernel on the GPU: CUDA is set up lazily, at the first tensor operation, and a
/// missing driver or NVRTC would otherwise show up as two panics on cubecl's threads after the
/// model is loaded and output folders exist. Also says how matmuls round, since that changes every
/// number a run reports (the rule is the vendored kernels' `tf32_allowed`, vendor/README.md).
#[cfg(feature = "cuda")]
fn cuda_ready() -> anyhow::Result<()> {
    use burn::tensor::{ElementConversion, Tensor};
    use std::sync::{Arc, Mutex};
    let setting = std::env::var("RECTIFY_TF32").unwrap_or_else(|_| "unset".into());
    tracing::info!("CUDA matmuls: IEEE f32 unless RECTIFY_TF32=1 allows TF32 (here RECTIFY_TF32 is {setting})");
    // The panics' messages are the diagnosis (cudarc names the libraries it looked for; NVRTC
    // its compile log), so they are kept rather than printed with backtraces.
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = messages.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let text = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned());
        let mut text = text.unwrap_or_else(|| "(no message)".into());
        text.truncate(text.floor_char_boundary(1000));
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    }));
    let probe = std::panic::catch_unwind(|| {
        let device = Default::default();
        let x = Tensor::<burn::backend::Cuda, 1>::from_floats([1.0, 2.0], &device);
        (x * 2.0).sum().into_scalar().elem::<f32>()
    });
    std::panic::set_hook(hook);
    let mut messages = std::mem::take(&mut *messages.lock().unwrap_or_else(|e| e.into_inner()));
    // The caller's panic on the closed channel says only that cubecl's thread died first.
    if messages.iter().any(|m| !m.contains("RecvError")) {
        messages.retain(|m| !m.contains("RecvError"));
    }
    let messages = messages.join(" | ");
    match probe {
        Ok(6.0) => Ok(()),
        Ok(v) => anyhow::bail!("CUDA computed (1 + 2) * 2 as {v}: this GPU or its driver is not computing correctly"),
        Err(_) => anyhow::bail!(
            "CUDA is not usable here: {messages}. rectify's CUDA build needs an NVIDIA driver for CUDA 13 (libcuda.so.1), \
             NVRTC 13 (libnvrtc.so.13 on LD_LIBRARY_PATH: a CUDA 13 toolkit's lib64, or PyTorch's nvidia/cu13/lib) and the \
             CUDA headers (CUDA_PATH, or /usr/local/cuda); scripts/gpu_check.py's `cuda_libraries` finds them on a machine \
             with PyTorch"
        ),
    }
}

fn eval_on(
    model: &std::path::Path,
    device: Device,
    benches: &[Benchmark],
    mut summary: Summary,
    out: &std::path::Path,
) -> anyhow::Result<Summary> {
    // Results already in `out` for the same model hash, settings, verifier and snapshot are
    // reused, so an interrupted or repeated run only evaluates what is missing. Each benchmark of
    // the earlier summary is one of: reusable by this run (it names it), graded again (it names
    // it, and only the verifier differs), kept as it is (it does not name it), evaluated again (it
    // names it, but it no longer holds), or dropped with a reason.
    let earlier: Option<Summary> =
        std::fs::read_to_string(out.join("summary.json")).ok().and_then(|t| serde_json::from_str::<Summary>(&t).ok());
    // Completions of the same model and settings that another verifier graded are graded again
    // with this one rather than generated again.
    let (mut reusable, mut regradable, mut kept) = (vec![], vec![], vec![]);
    if let Some(p) = &earlier {
        let same_generation = p.model_sha256 == summary.model_sha256 && p.config == summary.config;
        for x in &p.benchmarks {
            let same_verifier = x.verifier(&p.verifier_version) == summary.verifier_version;
            let results = out.join("results").join(format!("{}.jsonl", x.bench));
            // The results file must still be the one written with these figures (not one of a
            // run stopped before its summary was written).
            let why = if !same_generation {
                Some("for another model or settings (its results/ file is stale)")
            } else if !same_verifier && benches.iter().all(|b| b.name != x.bench) {
                Some("graded by another verifier, and this run does not name it to grade it again")
            } else if x.results_sha256.is_empty() {
                Some("from before results files were hashed")
            } else if !schemas::sha256_file(&results).is_ok_and(|h| h == x.results_sha256) {
                Some("whose results file has changed since")
            } else {
                None
            };
            let named = benches.iter().find(|b| b.name == x.bench);
            // This run's stops for a benchmark it names on the same snapshot.
            let stops = named.filter(|b| b.manifest.snapshot_id == x.snapshot_id).map(|b| stop_ids(&b.tokenizer));
            match (why, named, stops) {
                // A summary from before the pass@k curve and maj@K were recorded is summed up
                // again from its results' verdicts (nothing graded again: a sandbox's timeouts
                // could change them).
                (None, Some(b), Some(stops)) if stops == x.stop_ids && same_verifier && x.pass_at.is_empty() => {
                    match eval::evaluate::resummed(b, x, out) {
                        Ok(s) => reusable.push(s),
                        Err(e) => eprintln!("{}: evaluating again: its results cannot be summed up again ({e:#})", x.bench),
                    }
                }
                (None, Some(_), Some(stops)) if stops == x.stop_ids && same_verifier => reusable.push(x.clone()),
                (None, Some(_), Some(stops)) if stops == x.stop_ids => {
                    regradable.push(BenchSummary { graded_by: x.verifier(&p.verifier_version).to_string(), ..x.clone() })
                }
                (None, Some(_), Some(stops)) => eprintln!(
                    "{}: evaluating again: its results ended completions on stop ids {:?}, this run's are {stops:?}",
                    x.bench, x.stop_ids
                ),
                (None, None, _) => kept.push(x.clone()),
                (Some(why), None, _) => eprintln!("{}/summary.json held {} {why}: no longer in the summary", out.display(), x.bench),
                // Named by this run: evaluated again, replacing completions another model or
                // other settings wrote (said, since `--out` may be shared by mistake).
                (Some(why), Some(_), _) if !same_generation => {
                    eprintln!("{}: evaluating again, replacing the results in {} {why}", x.bench, out.display())
                }
                (Some(why), Some(_), _) => eprintln!("{}: evaluating again: {}/summary.json held it {why}", x.bench, out.display()),
                (None, Some(b), None) => eprintln!(
                    "{}: evaluating again: its results are of snapshot {}, this run's is {}",
                    x.bench, x.snapshot_id, b.manifest.snapshot_id
                ),
            }
        }
    }
    // Every write holds the reusable and regradable benchmarks the loop has not reached yet
    // (the latter marked with the verifier that graded them) and the kept ones, so a run that
    // fails part way loses none of them.
    let save = |summary: &Summary, pending: &[BenchSummary], regrade: &[BenchSummary]| {
        let mut all = summary.clone();
        all.benchmarks.extend(pending.iter().chain(regrade).chain(&kept).cloned());
        write_summary(out, &all)
    };
    let mut model_cell = None;
    for b in benches {
        if let Some(i) = reusable.iter().position(|x| x.bench == b.name) {
            let s = reusable.remove(i);
            eprintln!(
                "{}: reusing the results in {} (same model sha256, settings, snapshot, stop ids and verifier)",
                s.bench,
                out.display()
            );
            summary.benchmarks.push(s);
            save(&summary, &reusable, &regradable)?;
            continue;
        }
        if let Some(i) = regradable.iter().position(|x| x.bench == b.name) {
            let x = regradable.remove(i);
            eprintln!(
                "{}: grading the completions in {} again: verifier {} (they were graded by {}, {:.1}%)",
                x.bench,
                out.display(),
                summary.verifier_version,
                x.graded_by,
                100.0 * x.average_at_k
            );
            let s = eval::evaluate::regrade(b, &x, out)?;
            eprintln!("{}: Average@{} {:.1}% {} over {} prompts", s.bench, s.samples, 100.0 * s.average_at_k, s.interval_text(), s.prompts);
            summary.benchmarks.push(s);
            save(&summary, &reusable, &regradable)?;
            continue;
        }
        if model_cell.is_none() {
            model_cell = Some(load_generator(model, device)?);
        }
        let m = model_cell.as_deref().expect("loaded");
        let s = eval::evaluate::evaluate(m, b, &summary.config, out)?;
        eprintln!(
            "{}: Average@{} {:.1}% {} over {} prompts ({:.0} s, {:.0} new tokens/s)",
            s.bench,
            s.samples,
            100.0 * s.average_at_k,
            s.interval_text(),
            s.prompts,
            s.generation_seconds,
            s.new_tokens_per_second
        );
        summary.benchmarks.push(s);
        save(&summary, &reusable, &regradable)?;
    }
    // As the last write has it.
    summary.benchmarks.extend(kept);
    Ok(summary)
}

/// Each `(batch size, run number)` of `runs`, timed and printed as a JSON line.
fn bench_generate_on(
    model: &std::path::Path,
    device: Device,
    bench: &Benchmark,
    params: &Sampling,
    runs: &[(usize, usize)],
) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let m = load_generator(model, device)?;
    let vocab = bench.manifest.tokenizer.vocab_size;
    anyhow::ensure!(
        m.config().vocab_size >= vocab,
        "model vocab {} is smaller than the snapshot tokenizer's {vocab}",
        m.config().vocab_size
    );
    let load_seconds = t0.elapsed().as_secs_f64();
    if !matches!(device, Device::Cpu) {
        // A GPU compiles its kernels on first use: one untimed pass per batch size through prefill
        // and a decoding step, so that no timed run, prefill or decoding, includes compiling.
        let mut batches: Vec<usize> = runs.iter().map(|&(b, _)| b).collect();
        batches.dedup();
        for b in batches {
            eval::throughput::measure(m.as_ref(), &eval::throughput::prompts(bench, b), &Sampling { max_new_tokens: 2, ..*params });
        }
    }
    for &(b, run) in runs {
        let r = eval::throughput::measure(m.as_ref(), &eval::throughput::prompts(bench, b), params);
        let mut line = serde_json::to_value(&r)?;
        line["run"] = run.into();
        line["load_seconds"] = load_seconds.into();
        line["temperature"] = params.temperature.into();
        println!("{line}");
    }
    Ok(())
}

/// The log-probabilities of every token of `rows` under `model`, and the seconds they took.
fn rows_logprobs_on<B: burn::tensor::backend::Backend>(
    model: &std::path::Path,
    rows: &[&schemas::snapshot::Row],
    vocab_size: usize,
    device: &B::Device,
) -> anyhow::Result<(Vec<Vec<f32>>, f64)>
where
    Llama<B>: Sync,
{
    let m = Llama::<B>::load(model, device)?;
    m.check_vocab(vocab_size)?;
    m.check_context(rows.iter().map(|r| r.longest_example()).max().unwrap_or(0))?;
    let t0 = std::time::Instant::now();
    let pb = progress::bar(rows.len(), "logprobs");
    let lp = model::logprobs::rows_logprobs(&m, rows, device, || pb.inc(1));
    pb.finish_and_clear();
    Ok((lp, t0.elapsed().as_secs_f64()))
}

fn train_on<B: AutodiffBackend>(run: &Run, resume: bool, concurrency: usize, device: &burn::tensor::Device<B>) -> anyhow::Result<()> {
    let s = trainer::train::train::<B>(run, resume, concurrency, device)?;
    if let Some(m) = &s.last {
        println!(
            "done: {} steps; last step objective {:.4}, cross-entropy {:.4}, mean token prob {:.3}, {:.0} tokens/s",
            s.steps, m.objective, m.cross_entropy, m.mean_token_prob, m.tokens_per_second
        );
    }
    if let Some(mib) = progress::peak_rss_mib() {
        // Host memory: on CPU the whole run's, on a GPU only the host side of it.
        println!("peak memory: {:.2} GiB (peak resident set of this process)", mib / 1024.0);
    }
    println!("metrics:     {}", s.metrics.display());
    if run.validation_dir.is_some() {
        println!("held out:    {}", run.output_dir.join(trainer::validation::VALIDATION_FILE).display());
    }
    let curves = run.output_dir.join(trainer::curves::CURVES_FILE);
    if run.save && curves.exists() {
        println!("curves:      {}", curves.display());
    }
    if run.save {
        println!("checkpoints: {}", run.output_dir.join("checkpoints").display());
    }
    match &s.final_model {
        Some(dir) => println!(
            "final model: {} (Hugging Face safetensors + config.json + tokenizer.json, chat_template.jinja, tokenizer_config.json)",
            dir.display()
        ),
        None => println!("final model: not saved (--no-save)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_labels_grow_until_runs_differ() {
        let tmp = tempfile::tempdir().unwrap();
        let d = |p: &str| {
            let path = tmp.path().join(p);
            std::fs::create_dir_all(&path).unwrap();
            path
        };
        let (a, b, sft) = (d("x/a/dft"), d("x/b/dft"), d("x/a/sft"));
        std::fs::write(sft.join("metrics.jsonl"), "").unwrap();
        let runs = [a.clone(), b.clone(), sft.join("metrics.jsonl")];
        assert_eq!(distinct_labels(&runs, &[]), ["a/dft", "b/dft", "sft"]);
        // A given label counts: the default of a run that would repeat it grows instead.
        assert_eq!(distinct_labels(&[a.clone(), b.clone()], &["dft".to_string()]), ["dft", "b/dft"]);
        assert_eq!(distinct_labels(&[a.clone(), sft], &[]), ["dft", "sft"]);
        // The same folder twice cannot be told apart: its whole path, then no further.
        let same = distinct_labels(&[a.clone(), a.clone()], &[]);
        assert_eq!(same[0], same[1]);
        assert!(same[0].ends_with("x/a/dft"), "{same:?}");
    }
}
