//! Benchmarks: the prompts of an evaluation snapshot (prompt-only, chat template already applied),
//! read after the snapshot is verified against its manifest, so an evaluation is pinned to a
//! snapshot id just as training is.

use anyhow::{bail, Context};
use model_files::tokenizer::ChatTokenizer;
use schemas::manifest::Manifest;
use schemas::prompts::load_prompts;
use std::path::{Path, PathBuf};

pub use schemas::prompts::Prompt;

pub struct Benchmark {
    pub name: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub prompts: Vec<Prompt>,
    pub tokenizer: ChatTokenizer,
}

impl Benchmark {
    /// Fails when `model`'s own tokenizer reads an id of the prompts, the padding or the stop
    /// tokens as another token than this snapshot's tokenizer wrote
    /// ([`model_files::vocab::ModelTokens::check`]); `tokens` is the model's, read once for
    /// several benchmarks.
    pub fn check_model_tokens(&self, tokens: &model_files::vocab::ModelTokens) -> anyhow::Result<()> {
        let prompts = self.prompts.iter().flat_map(|p| p.prompt_ids.iter().copied());
        let generation = model::generate::stop_ids(&self.tokenizer).into_iter().chain([self.tokenizer.pad_id()]);
        tokens.check(self.tokenizer.tokenizer(), prompts.chain(generation), &self.dir)
    }

    /// How the model's own chat tokenizer `own` renders this benchmark's first question otherwise
    /// than the snapshot did; None where the ids agree. A trained `final/` folder's template
    /// carries the recipe's system prompt and template variables, so snapshots built with the
    /// base model's tokenizer would evaluate it in a format it was not trained in. The snapshot's
    /// own system prompt and template variables apply first: where its recipe set them (MATH-500's
    /// instruction) they are the benchmark's choice, not a default.
    pub fn prompt_format_difference(&self, own: &ChatTokenizer) -> anyhow::Result<Option<String>> {
        let Some(first) = self.prompts.first() else { return Ok(None) };
        let info = &self.manifest.tokenizer;
        let own = own.clone().with_system_prompt(info.system_prompt.clone()).with_template_vars(info.template_vars.clone())?;
        // The stored ids are what the model is prompted with.
        let (_, own_ids) = own.encode_prompt(&first.prompt)?;
        if own_ids == first.prompt_ids {
            return Ok(None);
        }
        // Where in the text, from the snapshot's tokenizer; one built before begin tokens were
        // recorded renders without the one its prompts hold, so only the ids are compared.
        if !self.tokenizer.begin_token_unknown() {
            if let Some(how) = self.tokenizer.prompt_difference(&own, &first.prompt, ("the snapshot", "the model's template"))? {
                return Ok(Some(how));
            }
        }
        Ok(Some(format!("{} tokens in the snapshot, {} from the model's template", first.prompt_ids.len(), own_ids.len())))
    }
}

/// Warns for each benchmark whose first question `model`'s own chat template (a GGUF's, or a
/// Hugging Face folder's) renders otherwise than the snapshot
/// ([`Benchmark::prompt_format_difference`]), saying how to build snapshots in the model's
/// format. Evaluation and sampling go on with the snapshot's prompts: comparing models under one
/// prompt format is a choice, but not one to make unknowingly.
pub fn warn_on_prompt_format(model: &Path, benches: &[&Benchmark]) {
    let not_compared = |e: anyhow::Error| {
        tracing::warn!("{}: its prompt format is not compared with the snapshots' ({e:#})", model.display());
    };
    let own = match ChatTokenizer::for_model(model, None) {
        Ok(Some(own)) => own,
        Ok(None) => return,
        Err(e) => return not_compared(e),
    };
    for b in benches {
        let how = match b.prompt_format_difference(&own) {
            Ok(how) => how,
            Err(e) => {
                not_compared(e);
                continue;
            }
        };
        if let Some(how) = how {
            let m = model.display();
            tracing::warn!(
                "{}: {m} renders its prompts otherwise than snapshot {} (built with {}): {how}. The snapshot's prompts are used; for \
                 the model's own format build the snapshots with its tokenizer (`pipeline build --tokenizer {m}`, or `make eval \
                 EVAL_MODEL={m} EVAL_TOKENIZER={m}`)",
                b.name,
                b.dir.display(),
                b.manifest.tokenizer.path,
            );
        }
    }
}

/// The evaluation recipes `scripts/eval_snapshots.sh` builds snapshots from, as the repository
/// lays them out (commands run from its root).
const EVAL_RECIPES: &str = "datasets/recipes/eval";

/// Where `make data-eval` and `scripts/eval_snapshots.sh` build the default model's evaluation
/// snapshots, and where `--snapshots` looks by default.
pub const DEFAULT_EVAL_DIR: &str = "snapshots/eval";

/// Where a benchmark's snapshot is. A path (it has a `/`) is a snapshot folder as it is; a name
/// is the folder of that name under `eval_dir`, else that name's `_test` split (so `gsm8k` means
/// `gsm8k_test`). scripts/eval_snapshots.sh builds snapshots by the same rule.
fn snapshot_dir(bench: &str, eval_dir: &Path) -> anyhow::Result<PathBuf> {
    let has_manifest = |dir: &Path| dir.join("manifest.json").exists();
    if bench.contains('/') {
        let dir = PathBuf::from(bench);
        anyhow::ensure!(has_manifest(&dir), "{bench}: not a snapshot folder (no manifest.json there)");
        return Ok(dir);
    }
    let named = eval_dir.join(bench);
    let split = eval_dir.join(format!("{bench}_test"));
    // A name with neither a snapshot nor a recipe to build one is a typo: say which names exist.
    let recipe_names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".yaml").map(str::to_string)).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let recipes = Path::new(EVAL_RECIPES);
    let has_recipe = [bench.to_string(), format!("{bench}_test")].iter().any(|n| recipes.join(format!("{n}.yaml")).exists());
    let found = [named.clone(), split.clone()].into_iter().find(|dir| has_manifest(dir));
    if found.is_none() {
        // `--snapshots snapshots` for `snapshots/eval`: one folder too high.
        let mut below: Vec<PathBuf> = std::fs::read_dir(eval_dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
        below.sort();
        if let Some(d) = below.iter().find(|d| has_manifest(&d.join(bench)) || has_manifest(&d.join(format!("{bench}_test")))) {
            bail!(
                "no evaluation snapshot for `{bench}` in {}, but {} holds one: pass --snapshots {}",
                eval_dir.display(),
                d.display(),
                d.display()
            );
        }
    }
    match found {
        Some(dir) => Ok(dir),
        None if !has_recipe && recipes.is_dir() => bail!(
            "no benchmark `{bench}`: no snapshot at {} or {}, and no recipe {EVAL_RECIPES}/{bench}.yaml to build one (recipes: {}; snapshots in {}: {})",
            named.display(),
            split.display(),
            recipe_names(recipes).join(", "),
            eval_dir.display(),
            expand_all(&["all".to_string()], eval_dir).unwrap_or_default().join(", ")
        ),
        // The script builds into snapshots/eval with the default model's tokenizer unless told
        // otherwise: the hint names the folder asked for.
        None if eval_dir == Path::new(DEFAULT_EVAL_DIR) => bail!(
            "no evaluation snapshot for `{bench}` at {} or {} (build it with `scripts/eval_snapshots.sh {bench}`, or all of them with `make data-eval`)",
            named.display(),
            split.display()
        ),
        None => bail!(
            "no evaluation snapshot for `{bench}` at {} or {} (build it with `EVAL_DIR={} EVAL_TOKENIZER=MODEL \
             scripts/eval_snapshots.sh {bench}`, MODEL the model whose tokenizer the snapshots are for)",
            named.display(),
            split.display(),
            eval_dir.display()
        ),
    }
}

/// The benchmarks `--bench` names: `all` is every snapshot folder under `eval_dir`, by name.
pub fn expand_all(benches: &[String], eval_dir: &Path) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(benches.iter().all(|b| !b.trim().is_empty()), "--bench names an empty benchmark (a stray comma?)");
    if benches != ["all"] {
        return Ok(benches.to_vec());
    }
    let mut names = vec![];
    for entry in std::fs::read_dir(eval_dir).with_context(|| format!("--bench all: cannot list {}", eval_dir.display()))? {
        let path = entry?.path();
        // `.NAME.tmp-PID` and `.NAME.old-PID` are a publish that was interrupted, not benchmarks.
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && path.join("manifest.json").exists() {
            names.push(path.file_name().expect("a folder name").to_string_lossy().into_owned());
        }
    }
    names.sort();
    anyhow::ensure!(!names.is_empty(), "--bench all: no snapshot folders in {} (make data-eval builds them)", eval_dir.display());
    Ok(names)
}

/// Reads and verifies an evaluation snapshot named by `bench` (see [`snapshot_dir`]).
pub fn load_benchmark(bench: &str, eval_dir: &Path) -> anyhow::Result<Benchmark> {
    load_benchmark_dir(&snapshot_dir(bench, eval_dir)?)
}

/// Reads and verifies the prompts snapshot in `dir`, a folder given as such (no name lookup).
pub fn load_benchmark_dir(dir: &Path) -> anyhow::Result<Benchmark> {
    let dir = dir.to_path_buf();
    let (manifest, prompts) = load_prompts(&dir)?;
    let tokenizer = ChatTokenizer::from_snapshot(&dir, &manifest.tokenizer)?;
    let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(Benchmark { name, dir, manifest, prompts, tokenizer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_benchmark_name_is_a_folder_its_test_split_or_a_path() {
        let tmp = tempfile::tempdir().unwrap();
        let eval_dir = tmp.path().join("eval");
        for name in ["gsm8k_test", "math500", "mbpp_test", "mbpp", ".math500.old-7"] {
            std::fs::create_dir_all(eval_dir.join(name)).unwrap();
            std::fs::write(eval_dir.join(name).join("manifest.json"), "{}").unwrap();
        }
        let elsewhere = tmp.path().join("mine");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("manifest.json"), "{}").unwrap();

        assert_eq!(snapshot_dir("gsm8k", &eval_dir).unwrap(), eval_dir.join("gsm8k_test"));
        assert_eq!(snapshot_dir("gsm8k_test", &eval_dir).unwrap(), eval_dir.join("gsm8k_test"));
        assert_eq!(snapshot_dir("math500", &eval_dir).unwrap(), eval_dir.join("math500"));
        // A folder of the name itself wins over its split.
        assert_eq!(snapshot_dir("mbpp", &eval_dir).unwrap(), eval_dir.join("mbpp"));
        assert_eq!(snapshot_dir(elsewhere.to_str().unwrap(), &eval_dir).unwrap(), elsewhere);
        let missing = snapshot_dir("aime24", &eval_dir).unwrap_err().to_string();
        assert!(missing.contains("aime24_test") && missing.contains("scripts/eval_snapshots.sh aime24"), "{missing}");
        // A path is taken as it is: no `_test` guess, no advice to build it.
        let path = eval_dir.join("gsm8k");
        let e = snapshot_dir(path.to_str().unwrap(), &eval_dir).unwrap_err().to_string();
        assert!(e.contains("not a snapshot folder") && !e.contains("eval_snapshots"), "{e}");
        // The folder above the snapshots given: the one below is named.
        let e = snapshot_dir("gsm8k", tmp.path()).unwrap_err().to_string();
        assert!(e.ends_with(&format!("but {} holds one: pass --snapshots {}", eval_dir.display(), eval_dir.display())), "{e}");

        let all = expand_all(&["all".to_string()], &eval_dir).unwrap();
        assert_eq!(all, ["gsm8k_test", "math500", "mbpp", "mbpp_test"]);
        assert_eq!(expand_all(&["gsm8k".to_string()], &eval_dir).unwrap(), ["gsm8k"]);
    }
}
