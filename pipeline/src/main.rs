//! `pipeline`: build, verify and look inside rectify dataset snapshots.

use clap::{Parser, Subcommand, ValueEnum};
use pipeline::inspect::Marking;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "pipeline", version, about = "Build reproducible, packed Parquet snapshots from math and code datasets")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a recipe: ingest, filter, dedup, decontaminate, tokenize, pack, write.
    Build {
        /// A data recipe (YAML), e.g. datasets/recipes/default.yaml.
        #[arg(long)]
        recipe: PathBuf,
        /// The snapshot folder to write (written beside it, then renamed into place).
        #[arg(long)]
        out: PathBuf,
        /// Tokenize with this model's tokenizer and chat template instead of the recipe's: a GGUF
        /// file or a Hugging Face folder (the recipe's system_prompt and template_vars still
        /// apply). For evaluating or training a model of another family than the recipe names.
        #[arg(long, value_name = "MODEL")]
        tokenizer: Option<PathBuf>,
        /// The end-of-turn token the loss mask covers, in place of the tokenizer's own eos (a base
        /// model's eos often ends the text while its template ends turns with `<|im_end|>`).
        #[arg(long, value_name = "TOKEN")]
        eos_token: Option<String>,
        /// Replace an existing snapshot at --out.
        #[arg(long)]
        force: bool,
    },
    /// Re-hash every shard and sidecar against the manifest.
    Verify { dir: PathBuf },
    /// Decode one packed row and show which tokens are trained.
    Inspect {
        dir: PathBuf,
        /// The packed row to show, from 0.
        #[arg(long, default_value_t = 0)]
        row: usize,
        /// Trained tokens in colour (auto: on a terminal), else inside ⟦ ⟧.
        #[arg(long, value_enum, default_value_t = Colour::Auto)]
        color: Colour,
    },
    /// Per-stage counts, drop reasons, decontamination, packing and shards.
    Stats { dir: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum Colour {
    Auto,
    Always,
    Never,
}

fn main() -> ExitCode {
    progress::init_logging();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Build { recipe, out, force, tokenizer, eos_token } => {
            let over = pipeline::build::TokenizerOverride { model: tokenizer.as_deref(), eos_token: eos_token.as_deref() };
            let m = pipeline::build::build_with(&recipe, &out, force, &over)?;
            println!("{}", pipeline::inspect::stats(&out)?);
            println!("snapshot {} written to {}", m.snapshot_id, out.display());
        }
        Command::Verify { dir } => {
            let (m, problems) = schemas::snapshot::verify(&dir)?;
            if !problems.is_empty() {
                for p in &problems {
                    println!("MISMATCH {p}");
                }
                println!("snapshot {} at {}: {} problem(s)", m.snapshot_id, dir.display(), problems.len());
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "snapshot {} at {}: {} shards and {} sidecars match the manifest",
                m.snapshot_id,
                dir.display(),
                m.shards.len(),
                m.sidecars.len()
            );
        }
        Command::Inspect { dir, row, color } => {
            let colour = match color {
                Colour::Always => true,
                Colour::Never => false,
                Colour::Auto => std::io::stdout().is_terminal(),
            };
            print!("{}", pipeline::inspect::inspect(&dir, row, if colour { Marking::Colour } else { Marking::Brackets })?);
        }
        Command::Stats { dir } => print!("{}", pipeline::inspect::stats(&dir)?),
    }
    Ok(ExitCode::SUCCESS)
}
