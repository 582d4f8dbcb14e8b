//! Chat template rendering and tokenization with a loss mask.
//!
//! The tokenizer is either rebuilt from a GGUF file's metadata (so the model file alone fixes the
//! tokens) or loaded from a Hugging Face `tokenizer.json`. Either way it can be written back out
//! as `tokenizer.json` ([`ChatTokenizer::tokenizer_json`]), so a Python baseline can load the very
//! same tokenizer.
//!
//! Loss mask: the conversation is rendered twice, once up to the generation prompt (P) and once in
//! full (F). The trained span is F from the end of P up to and including the first end-of-turn
//! token after it: the assistant response and the token that ends it, which is what the model has
//! to learn to emit in order to stop. Text after that (ChatML's trailing newline) is not trained.
//! F is tokenized once, and a token is trained iff its byte span lies entirely inside the trained
//! span. A token straddling the start (for instance a response that begins with a newline, merged
//! with the generation prompt's own newline) is not trained: it belongs partly to the prompt, and
//! tokenizing P and the response separately would give token boundaries the model never sees at
//! inference time.

use crate::gguf::Gguf;
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use schemas::manifest::TokenizerInfo;
use schemas::snapshot::{TEMPLATE_FILE, TOKENIZER_FILE};
use schemas::{Role, Turn};
use std::collections::BTreeMap;
use std::path::Path;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PostProcessorWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// The regex llama.cpp and Hugging Face use for Qwen2's pre-tokenizer.
const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's llama_token_type).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Token ids and, per token, 1 if the loss is taken on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub loss_mask: Vec<u8>,
}

/// The usual end-of-text and end-of-turn tokens: generation stops on whichever the vocabulary
/// has (`model::generate::stop_ids`), and text may not hold them.
pub const END_TOKENS: [&str; 6] = ["<|endoftext|>", "<|im_end|>", "</s>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"];

/// A Hugging Face `tokenizer.json`, with an error naming the file.
fn load_tokenizer_json(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| anyhow!("{}: cannot load tokenizer.json: {e}", path.display()))
}

/// Where a Hugging Face model folder keeps its tokens' roles and (transformers 4) chat template.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// The variables every rendering of a chat template sets, in this order: `messages`, `bos_token`,
/// `eos_token`, `add_generation_prompt`.
pub const TEMPLATE_CONTEXT: [&str; 4] = ["messages", "bos_token", "eos_token", "add_generation_prompt"];

/// A tokenizer plus the chat template and special tokens needed to turn (prompt, response) pairs
/// into training rows.
#[derive(Clone)]
pub struct ChatTokenizer {
    tokenizer: Tokenizer,
    template: String,
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
    eos_id: u32,
    pad_id: u32,
    system_prompt: Option<String>,
    /// Variables the template is rendered with besides those [`TEMPLATE_CONTEXT`] names.
    template_vars: BTreeMap<String, serde_json::Value>,
    /// The texts of the end-of-turn token, of the special tokens the chat template writes (role
    /// markers) and of the end-of-text, begin and padding tokens: text that a prompt or response
    /// may not hold, since it would be read as the token and break the conversation's structure
    /// or stop generation there.
    special_texts: Vec<String>,
    /// Whether encoding adds the post-processor's tokens (a begin token) to the rendered
    /// template, as llama.cpp does with a GGUF's tokenizer; transformers' `apply_chat_template`
    /// does not, so a Hugging Face `tokenizer.json` encodes the template's text alone.
    add_special_tokens: bool,
}

impl std::fmt::Debug for ChatTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_token", &self.eos_token)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("system_prompt", &self.system_prompt)
            .field("template_vars", &self.template_vars)
            .finish_non_exhaustive()
    }
}

/// Which pre-tokenizer a GGUF `tokenizer.ggml.pre` value stands for.
enum PreKind {
    /// Every digit on its own, then the GPT-2 regex (SmolLM, StarCoder).
    DigitsGpt2,
    /// The GPT-2 regex alone.
    Gpt2,
    Qwen2,
}

/// The pre-tokenizer of a GGUF whose `tokenizer.ggml.pre` is `pre` and whose
/// `general.architecture` is `arch`.
fn pre_kind(pre: Option<&str>, arch: Option<&str>, path: &Path) -> Result<PreKind> {
    // Aliases follow llama.cpp's llama-vocab.cpp, restricted to the regexes built here.
    Ok(match pre {
        Some("smollm" | "starcoder" | "refact") => PreKind::DigitsGpt2,
        Some("gpt-2" | "gpt2" | "phi-2") => PreKind::Gpt2,
        Some("qwen2" | "deepseek-r1-qwen") => PreKind::Qwen2,
        Some(other) => bail!(
            "{}: tokenizer.ggml.pre = \"{other}\" is not supported (supported: smollm, starcoder, refact, \
             gpt-2, phi-2, qwen2, deepseek-r1-qwen); use tokenizer_json instead",
            path.display()
        ),
        // Files converted before llama.cpp added the key (spring 2024) lack it. llama.cpp then
        // uses LLAMA_VOCAB_PRE_TYPE_DEFAULT, whose regexes (punctuation runs, GPT-2 words,
        // `\p{N}+`, three-digit groups) are not SmolLM2's (single digits, then GPT-2's) nor any
        // other built here, so assuming SmolLM2's, as this function once did, matched neither
        // llama.cpp nor, say, a Llama 3 model's own tokenizer. Choose only where the architecture
        // settles it: the qwen2-architecture models of that time (Qwen1.5) all shipped Qwen2's
        // tokenizer, which is the pattern and NFC normalisation built here (the ids Hugging Face
        // gives, though not the ones llama.cpp's fallback gives). A llama-family file may be
        // Llama 3, SmolLM or another model with another regex: refuse rather than guess.
        None => match arch {
            Some("qwen2") => {
                tracing::warn!("{}: no tokenizer.ggml.pre; general.architecture is qwen2, so using Qwen2's pre-tokenizer", path.display());
                PreKind::Qwen2
            }
            _ => bail!(
                "{}: no tokenizer.ggml.pre, and general.architecture = {} does not say which pre-tokenizer the model \
                 uses; use tokenizer_json (the model's tokenizer.json) instead",
                path.display(),
                arch.map_or("(missing)".to_string(), |a| format!("\"{a}\""))
            ),
        },
    })
}

fn build_environment(template: &str) -> Result<minijinja::Environment<'static>> {
    let mut env = minijinja::Environment::new();
    // Hugging Face renders chat templates with these two on; without them whitespace differs.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<minijinja::Value, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, format!("raise_exception: {msg}")))
    });
    env.add_template_owned("chat_template", without_generation_tags(template))
        .map_err(|e| anyhow!("chat template does not compile: {e:#}"))?;
    Ok(env)
}

/// `{% generation %}` ... `{% endgeneration %}` (transformers' extension marking the assistant's
/// text, as TRL's assistant-only-loss templates write it) as `{% if true %}` ... `{% endif %}`:
/// transformers renders the body unchanged, and the same tag delimiters keep their whitespace
/// control. rectify finds the trained span itself, by rendering with and without the response.
fn without_generation_tags(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("{%") {
        let (before, tag) = rest.split_at(at);
        out.push_str(before);
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        // Whitespace control (`-` or `+`) on either side is kept as written.
        let control = |c: Option<char>| c.filter(|c| *c == '-' || *c == '+').map(String::from).unwrap_or_default();
        let (open, close) = (control(inner.chars().next()), control(inner.chars().next_back()));
        match inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace()) {
            "generation" => out.push_str(&format!("{{%{open} if true {close}%}}")),
            "endgeneration" => out.push_str(&format!("{{%{open} endif {close}%}}")),
            _ => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Prepends bos the way Hugging Face tokenizer.json files of bos-adding models do.
fn bos_processor(bos: &str, id: u32) -> std::result::Result<TemplateProcessing, String> {
    let mut b = TemplateProcessing::builder();
    b.try_single(format!("{bos} $A"))?;
    b.try_pair(format!("{bos} $A {bos} $B"))?;
    b.special_tokens(vec![(bos.to_string(), id)]);
    b.build().map_err(|e| e.to_string())
}

/// `s` around byte `at`, cut on char boundaries, for error messages.
fn snippet(s: &str, at: usize) -> &str {
    let mut a = at.min(s.len());
    while !s.is_char_boundary(a) {
        a -= 1;
    }
    let mut b = (a + 40).min(s.len());
    while !s.is_char_boundary(b) {
        b -= 1;
    }
    &s[a..b]
}

fn tok_err(e: tokenizers::Error) -> anyhow::Error {
    anyhow!("tokenizer: {e}")
}

/// `(start, end)` byte offsets of a token in the text it was encoded from.
type ByteSpan = (usize, usize);

impl ChatTokenizer {
    /// Build the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata. `template_override` is
    /// the Jinja source of a chat template to use instead of `tokenizer.chat_template`.
    pub fn from_gguf(path: &Path, system_prompt: Option<String>, template_override: Option<String>) -> Result<Self> {
        let g = Gguf::open(path)?;
        let p = path.display();

        let model = g.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            bail!("{p}: tokenizer.ggml.model = \"{model}\"; only byte-level BPE (\"gpt2\") is supported");
        }
        let pre = pre_kind(g.opt_str("tokenizer.ggml.pre")?, g.opt_str("general.architecture")?, path)?;

        let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
        let merges_raw = g.get_str_array("tokenizer.ggml.merges")?;
        let types = match g.contains("tokenizer.ggml.token_type") {
            true => g.get_i32_array("tokenizer.ggml.token_type")?,
            false => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            bail!("{p}: {} token types for {} tokens", types.len(), tokens.len());
        }

        let mut vocab = Vocab::default();
        for (id, t) in tokens.iter().enumerate() {
            // A repeated string keeps its first id, as llama.cpp's text-to-token map does.
            vocab.entry(t.to_string()).or_insert(id as u32);
        }
        let merges: Merges = merges_raw
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| anyhow!("{p}: tokenizer.ggml.merges[{i}] = {m:?} is not two tokens separated by a space"))
            })
            .collect::<Result<_>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| anyhow!("{p}: cannot build BPE from tokenizer.ggml.tokens/merges: {e}"))?;

        let mut tokenizer = Tokenizer::new(bpe);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            PreKind::DigitsGpt2 => Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into(),
            PreKind::Gpt2 => ByteLevel::new(false, true, true).into(),
            PreKind::Qwen2 => Sequence::new(vec![
                Split::new(SplitPattern::Regex(QWEN2_PATTERN.to_string()), SplitDelimiterBehavior::Isolated, false)
                    .map_err(|e| anyhow!("qwen2 pre-tokenizer regex: {e}"))?
                    .into(),
                ByteLevel::new(false, false, false).into(),
            ])
            .into(),
        };
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        if let PreKind::Qwen2 = pre {
            // Qwen2's tokenizer.json normalises to NFC; mirror it so ids match.
            tokenizer.with_normalizer(Some(NFC));
        }
        tokenizer.with_decoder(Some(ByteLevel::default()));

        let token = |key: &str| -> Result<Option<(u32, String)>> {
            match g.opt_u32(key)? {
                None => Ok(None),
                Some(id) => {
                    let s = tokens
                        .get(id as usize)
                        .ok_or_else(|| anyhow!("{p}: {key} = {id} is outside the {}-token vocabulary", tokens.len()))?;
                    Ok(Some((id, s.to_string())))
                }
            }
        };
        let bos = token("tokenizer.ggml.bos_token_id")?;
        // The end-of-turn token is what ends an assistant reply (Llama 3's <|eot_id|>, Gemma's
        // <end_of_turn>); plain eos only when the file has no separate one.
        let eos = match token("tokenizer.ggml.eot_token_id")? {
            Some(t) => t,
            None => {
                token("tokenizer.ggml.eos_token_id")?.ok_or_else(|| anyhow!("{p}: metadata key `tokenizer.ggml.eos_token_id` missing"))?
            }
        };
        let pad_id = token("tokenizer.ggml.padding_token_id")?.map(|t| t.0).unwrap_or(eos.0);

        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter_map(|(t, &ty)| match ty {
                TOKEN_TYPE_CONTROL => Some(AddedToken::from(t.to_string(), true)),
                // Converters store user-defined tokens as plain text, not byte-level encoded.
                TOKEN_TYPE_USER_DEFINED => Some(AddedToken::from(t.to_string(), false)),
                _ => None,
            })
            .collect();
        tokenizer.add_special_tokens(&added);
        // The end-of-turn token must be recognised in rendered text even if the file forgot to
        // mark it as a control token.
        tokenizer.add_special_tokens(&[AddedToken::from(eos.1.clone(), true)]);

        let add_bos = g.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
        let post: PostProcessorWrapper = match (&bos, add_bos) {
            (Some((bos_id, bos_str)), true) => bos_processor(bos_str, *bos_id).map_err(|e| anyhow!("{p}: bos post-processor: {e}"))?.into(),
            (None, true) => bail!("{p}: tokenizer.ggml.add_bos_token is true but there is no bos_token_id"),
            // What SmolLM2's tokenizer.json has: offsets left untouched.
            _ => ByteLevel::new(true, false, true).into(),
        };
        tokenizer.with_post_processor(Some(post));

        let template = match template_override {
            Some(t) => t,
            None => g
                .get_str("tokenizer.chat_template")
                .context("no chat template in the model; set tokenizer.chat_template in the recipe")?
                .to_string(),
        };
        Self::new(tokenizer, template, bos.map(|b| b.1).unwrap_or_default(), eos.1, eos.0, pad_id, system_prompt)
    }

    /// Load a Hugging Face `tokenizer.json` and a Jinja chat template file. `eos_token` is the
    /// end-of-turn token the loss mask must cover, e.g. `<|im_end|>`; `bos_token` the token a
    /// template writes as `bos_token` (tokenizer.json does not say which that is): a template
    /// that writes it is refused without one, rather than rendering it empty (`Some("")` says
    /// there is none).
    pub fn from_tokenizer_json(
        tokenizer_json: &Path,
        chat_template: &Path,
        eos_token: &str,
        bos_token: Option<&str>,
        system_prompt: Option<String>,
    ) -> Result<Self> {
        let t = Self::from_files(tokenizer_json, chat_template, eos_token, None, bos_token.unwrap_or_default().to_string(), system_prompt)?;
        match bos_token {
            None if t.begin_token_unknown() => bail!(
                "chat template {} writes `bos_token`, and {} does not say which token that is: name it as the recipe's `tokenizer.bos_token` (\"\" for none)",
                chat_template.display(),
                tokenizer_json.display()
            ),
            Some(b) if !b.is_empty() && t.tokenizer.token_to_id(b).is_none() => {
                bail!("{}: bos token {b:?} is not in the vocabulary", tokenizer_json.display())
            }
            _ => Ok(t.with_transformers_encoding()),
        }
    }

    /// Encoding as transformers' `apply_chat_template` does (`add_special_tokens=False`): the
    /// template writes every special token; the `tokenizer.json`'s post-processor adds none.
    fn with_transformers_encoding(mut self) -> Self {
        self.add_special_tokens = false;
        self
    }

    /// The tokenizer a snapshot was built with: the `tokenizer.json` and chat template it keeps
    /// beside its shards, with the end-of-turn, padding and begin tokens its manifest records.
    pub fn from_snapshot(dir: &Path, info: &TokenizerInfo) -> Result<Self> {
        let (json, template) = (dir.join(TOKENIZER_FILE), dir.join(TEMPLATE_FILE));
        // Encoded as the build encoded it: as llama.cpp does for a GGUF's tokenizer, else as
        // transformers does.
        let from_gguf = crate::checkpoint::is_gguf(Path::new(&info.path));
        Self::from_files(&json, &template, &info.eos_token, Some(info.pad_id), info.bos_token.clone(), info.system_prompt.clone())
            .map(|t| if from_gguf { t } else { t.with_transformers_encoding() })
            .and_then(|t| t.with_template_vars(info.template_vars.clone()))
            .with_context(|| format!("the tokenizer of snapshot {}", dir.display()))
    }

    /// `tokenizer.json` + template file; the padding token defaults to the file's, else eos.
    fn from_files(
        tokenizer_json: &Path,
        chat_template: &Path,
        eos_token: &str,
        pad_id: Option<u32>,
        bos_token: String,
        system_prompt: Option<String>,
    ) -> Result<Self> {
        let tokenizer = load_tokenizer_json(tokenizer_json)?;
        let template =
            std::fs::read_to_string(chat_template).with_context(|| format!("cannot read chat template {}", chat_template.display()))?;
        Self::with_tokenizer(tokenizer, tokenizer_json, template, eos_token, pad_id, bos_token, system_prompt)
    }

    /// A loaded `tokenizer.json` (read from `source`) with its template and tokens; the padding
    /// token defaults to the file's, else eos.
    fn with_tokenizer(
        tokenizer: Tokenizer,
        source: &Path,
        template: String,
        eos_token: &str,
        pad_id: Option<u32>,
        bos_token: String,
        system_prompt: Option<String>,
    ) -> Result<Self> {
        let eos_id = tokenizer
            .token_to_id(eos_token)
            .ok_or_else(|| anyhow!("{}: eos token {eos_token:?} is not in the vocabulary", source.display()))?;
        if !tokenizer.get_added_tokens_decoder().get(&eos_id).is_some_and(|t| t.special) {
            // Not an error: a plain vocabulary token still works if the template text tokenizes
            // to it, which the encode-time checks verify.
            tracing::warn!(
                "{}: eos token {eos_token:?} is not a special added token; it may be split when it appears in text",
                source.display()
            );
        }
        let pad_id = pad_id.or_else(|| tokenizer.get_padding().map(|p| p.pad_id)).unwrap_or(eos_id);
        Self::new(tokenizer, template, bos_token, eos_token.to_string(), eos_id, pad_id, system_prompt)
    }

    /// Load the tokenizer of a Hugging Face model folder: `tokenizer.json`, the chat template
    /// from `chat_template.jinja` (transformers 5) or `tokenizer_config.json`'s `chat_template`
    /// (transformers 4; a list of named templates gives its `default`), and the end-of-turn,
    /// begin and padding tokens from `tokenizer_config.json` (or `special_tokens_map.json`).
    /// `template_override` is the Jinja source of a chat template to use instead (a base model's
    /// folder may have none).
    pub fn from_hf_dir(dir: &Path, system_prompt: Option<String>, template_override: Option<String>) -> Result<Self> {
        let read_json = |name: &str| -> Result<serde_json::Value> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::Value::Null),
                Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
            }
        };
        let config_path = dir.join(TOKENIZER_CONFIG_FILE);
        let config = read_json(TOKENIZER_CONFIG_FILE)?;
        // Older transformers 4 folders keep the special tokens in a file of their own.
        let special_map = read_json("special_tokens_map.json").unwrap_or_else(|e| {
            tracing::warn!("{e:#}: its tokens are not used");
            serde_json::Value::Null
        });
        // A token is a string, or an AddedToken object with its text in `content`.
        let token = |key: &str| -> Option<String> {
            let v = config.get(key).filter(|v| !v.is_null()).or_else(|| special_map.get(key))?;
            v.as_str().or_else(|| v.get("content").and_then(|c| c.as_str())).map(str::to_string)
        };
        let template_file = dir.join(TEMPLATE_FILE);
        let template = if let Some(t) = template_override {
            t
        } else if template_file.exists() {
            std::fs::read_to_string(&template_file).with_context(|| format!("cannot read {}", template_file.display()))?
        } else {
            match config.get("chat_template") {
                Some(serde_json::Value::String(t)) => t.clone(),
                Some(serde_json::Value::Array(named)) => named
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str())
                    .with_context(|| format!("{}: `chat_template` lists no template named `default`", config_path.display()))?
                    .to_string(),
                _ => bail!(
                    "{} has no chat template: neither {TEMPLATE_FILE} nor a `chat_template` in {TOKENIZER_CONFIG_FILE}",
                    dir.display()
                ),
            }
        };
        let eos = token("eos_token").with_context(|| {
            format!("{}: no `eos_token`, the end-of-turn token the loss mask and generation need", config_path.display())
        })?;
        let tokenizer = load_tokenizer_json(&dir.join(TOKENIZER_FILE))?;
        let pad_id = match token("pad_token") {
            Some(p) => Some(
                tokenizer.token_to_id(&p).with_context(|| format!("{}: token {p:?} is not in the vocabulary", config_path.display()))?,
            ),
            None => None,
        };
        Self::with_tokenizer(tokenizer, &config_path, template, &eos, pad_id, token("bos_token").unwrap_or_default(), system_prompt)
            .map(Self::with_transformers_encoding)
    }

    /// Writes this tokenizer into a Hugging Face model folder being published (by
    /// `schemas::snapshot::publish_dir`, which syncs and renames the whole folder):
    /// `tokenizer.json`, `chat_template.jinja` (transformers 5) and `tokenizer_config.json` (see
    /// [`ChatTokenizer::hf_tokenizer_config`]).
    pub fn save_hf_files(&self, dir: &Path) -> Result<()> {
        for (name, text) in [
            (TOKENIZER_FILE, self.tokenizer_json()),
            (TEMPLATE_FILE, self.exported_template()),
            (TOKENIZER_CONFIG_FILE, self.hf_tokenizer_config()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// The tokenizer that travels with a model: a GGUF's own, else the `tokenizer.json` (with a
    /// chat template) of a Hugging Face folder, or of the folder a lone `.safetensors` file is
    /// in. None when that folder has no `tokenizer.json`.
    pub fn for_model(model: &Path, system_prompt: Option<String>) -> Result<Option<Self>> {
        if crate::checkpoint::is_gguf(model) {
            return Self::from_gguf(model, system_prompt, None).map(Some);
        }
        let dir = crate::checkpoint::model_folder(model);
        if !dir.join(TOKENIZER_FILE).exists() {
            return Ok(None);
        }
        Self::from_hf_dir(dir, system_prompt, None).map(Some)
    }

    /// The chat template as exported, so that transformers' `apply_chat_template` and
    /// [`ChatTokenizer::for_model`] render prompts as the model was trained on them while a
    /// caller can still choose otherwise:
    /// - each template variable is first set to the value it had here unless the caller passes
    ///   it (a model trained with `enable_thinking: false` is prompted so by default);
    /// - with a system prompt, conversations that do not open with a system message get it
    ///   first, in place of the template's own default (as LLaMA-Factory's exports carry their
    ///   `default_system`).
    pub fn exported_template(&self) -> String {
        let mut head = String::new();
        for (name, value) in &self.template_vars {
            // JSON literals are Jinja literals, except null.
            let literal = if value.is_null() { "none".to_string() } else { value.to_string() };
            head.push_str(&format!("{{%- if {name} is not defined %}}{{%- set {name} = {literal} %}}{{%- endif %}}\n"));
        }
        if let Some(system) = &self.system_prompt {
            // A JSON string is a Jinja string literal (jinja2 and minijinja read the same escapes).
            // `messages` is set at the top level, as Llama 3.1's own template does.
            let literal = serde_json::Value::from(system.as_str()).to_string();
            head.push_str(&format!(
                "{{%- if not (messages and messages[0]['role'] == 'system') %}}\
                 {{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages %}}{{%- endif %}}\n"
            ));
        }
        // A GGUF's tokenizer adds its begin token when encoding, as llama.cpp does;
        // `apply_chat_template` encodes the text alone, so the template writes it.
        if self.adds_begin_token() && !self.render("x", None).is_ok_and(|t| t.starts_with(&self.bos_token)) {
            head.push_str("{{- bos_token }}");
        }
        head + &self.template
    }

    /// Whether encoding puts the begin token before the rendered text (a GGUF whose
    /// `add_bos_token` is set), where the template does not write it.
    fn adds_begin_token(&self) -> bool {
        let Some(bos) = self.tokenizer.token_to_id(&self.bos_token).filter(|_| self.add_special_tokens && !self.bos_token.is_empty())
        else {
            return false;
        };
        self.tokenizer.encode("x", true).is_ok_and(|e| e.get_ids().first() == Some(&bos))
    }

    /// `tokenizer_config.json` for a model folder this tokenizer's model is saved in, so that
    /// transformers (4 and 5) and [`ChatTokenizer::from_hf_dir`] find the end-of-turn and padding
    /// tokens and the chat template.
    pub fn hf_tokenizer_config(&self) -> String {
        let pad = self.id_to_token(self.pad_id).unwrap_or_else(|| self.eos_token.clone());
        let mut config = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": self.eos_token,
            "pad_token": pad,
            "chat_template": self.exported_template(),
        });
        if !self.bos_token.is_empty() {
            config["bos_token"] = self.bos_token.clone().into();
        }
        serde_json::to_string_pretty(&config).expect("strings serialise") + "\n"
    }

    fn new(
        tokenizer: Tokenizer,
        template: String,
        bos_token: String,
        eos_token: String,
        eos_id: u32,
        pad_id: u32,
        system_prompt: Option<String>,
    ) -> Result<Self> {
        if eos_token.is_empty() {
            bail!("the end-of-turn token is empty");
        }
        let env = build_environment(&template)?;
        // The special tokens the template writes, those generation stops on, and the begin and
        // padding tokens; not every special token: SmolLM2 also marks `<filename>` special, which
        // a prompt may well hold as text.
        let pad = tokenizer.id_to_token(pad_id);
        let mut special_texts: Vec<String> = tokenizer
            .get_added_tokens_decoder()
            .values()
            .filter(|t| t.special && !t.content.is_empty())
            .map(|t| t.content.clone())
            .filter(|t| template.contains(t.as_str()) || END_TOKENS.contains(&t.as_str()) || *t == bos_token || Some(t) == pad.as_ref())
            .collect();
        special_texts.push(eos_token.clone());
        special_texts.sort();
        special_texts.dedup();
        let template_vars = BTreeMap::new();
        Ok(ChatTokenizer {
            tokenizer,
            template,
            env,
            bos_token,
            eos_token,
            eos_id,
            pad_id,
            system_prompt,
            template_vars,
            special_texts,
            add_special_tokens: true,
        })
    }

    /// This tokenizer with `token` as the end-of-turn token that the loss mask covers and
    /// generation stops on, in place of its source's: a base model's `eos_token` is often its
    /// end of text (`<|endoftext|>`) while its chat template ends each turn with another
    /// (`<|im_end|>`). The padding token stays the source's. `token` must be in the vocabulary.
    pub fn with_eos_token(self, token: &str) -> Result<Self> {
        let id = self.tokenizer.token_to_id(token).with_context(|| format!("end-of-turn token {token:?} is not in the vocabulary"))?;
        let mut tokenizer = self.tokenizer;
        tokenizer.add_special_tokens(&[AddedToken::from(token.to_string(), true)]);
        let mut t = Self::new(tokenizer, self.template, self.bos_token, token.to_string(), id, self.pad_id, self.system_prompt)?;
        t.template_vars = self.template_vars;
        t.add_special_tokens = self.add_special_tokens;
        Ok(t)
    }

    /// This tokenizer rendering its template with `vars` too (a recipe's `tokenizer.template_vars`),
    /// e.g. `enable_thinking: false`. A name the renderer sets itself ([`TEMPLATE_CONTEXT`]) is
    /// refused rather than overriding it or being overridden.
    pub fn with_template_vars(mut self, vars: BTreeMap<String, serde_json::Value>) -> Result<Self> {
        if let Some(name) = vars.keys().find(|k| TEMPLATE_CONTEXT.contains(&k.as_str())) {
            bail!("template variable `{name}` is set by the renderer itself ({}); remove it", TEMPLATE_CONTEXT.join(", "));
        }
        // Exported as `{% set NAME = ... %}`, so NAME must be a Jinja name.
        let is_name = |k: &str| {
            k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if let Some(name) = vars.keys().find(|k| !is_name(k)) {
            bail!("template variable `{name}` is not a name a template can read (letters, digits, `_`)");
        }
        // YAML's `no` / `off` and a shell's `False` arrive as strings, and a template's
        // `enable_thinking is false` is then quietly untrue.
        for (name, value) in &vars {
            if let Some(s) = value
                .as_str()
                .filter(|s| ["true", "false", "yes", "no", "on", "off", "none", "null"].contains(&s.to_ascii_lowercase().as_str()))
            {
                bail!("template variable `{name}` is the string {s:?}; write true, false or null (unquoted) for a boolean or none");
            }
        }
        self.template_vars = vars;
        Ok(self)
    }

    /// This tokenizer putting `system_prompt` before every prompt (None: the template's own
    /// default, or the default an exported template carries).
    pub fn with_system_prompt(mut self, system_prompt: Option<String>) -> Self {
        self.system_prompt = system_prompt;
        self
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    pub fn chat_template(&self) -> &str {
        &self.template
    }
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    pub fn system_prompt(&self) -> Option<&str> {
        self.system_prompt.as_deref()
    }
    pub fn template_vars(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.template_vars
    }
    /// Whether the template writes `bos_token` while the begin token is unknown (a snapshot
    /// built before begin tokens were recorded): its rendering then lacks a token the rows have.
    pub fn begin_token_unknown(&self) -> bool {
        self.bos_token.is_empty() && self.template.contains("bos_token")
    }
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Render the conversation: with `response` None, up to and including the generation prompt.
    pub fn render(&self, prompt: &str, response: Option<&str>) -> Result<String> {
        self.render_messages(&self.messages(&[], prompt, response), response.is_none())
    }

    /// The turns the template gets: a system turn (the context's own, else the tokenizer's
    /// system prompt, else none), the context's other turns, the prompt, and the response
    /// where there is one.
    fn messages(&self, context: &[Turn], prompt: &str, response: Option<&str>) -> Vec<serde_json::Value> {
        let turn = |role: Role, content: &str| serde_json::json!({"role": role.as_str(), "content": content});
        let mut messages = Vec::with_capacity(context.len() + 3);
        if let (Some(s), false) = (&self.system_prompt, context.first().is_some_and(|t| t.role == Role::System)) {
            messages.push(turn(Role::System, s));
        }
        messages.extend(context.iter().map(|t| turn(t.role, &t.content)));
        messages.push(turn(Role::User, prompt));
        if let Some(r) = response {
            messages.push(turn(Role::Assistant, r));
        }
        messages
    }

    fn render_messages(&self, messages: &[serde_json::Value], add_generation_prompt: bool) -> Result<String> {
        let mut ctx: serde_json::Map<String, serde_json::Value> = self.template_vars.clone().into_iter().collect();
        let own = [serde_json::json!(messages), self.bos_token.clone().into(), self.eos_token.clone().into(), add_generation_prompt.into()];
        ctx.extend(TEMPLATE_CONTEXT.iter().map(|k| k.to_string()).zip(own));
        let tmpl = self.env.get_template("chat_template").expect("template added in new()");
        tmpl.render(&ctx).map_err(|e| anyhow!("chat template failed to render: {e:#}"))
    }

    /// Token ids and byte offsets of `text` as the model sees it: special tokens in the text are
    /// recognised, and for a GGUF's tokenizer the post-processor's own (bos) is added.
    fn encode_text(&self, text: &str) -> Result<(Vec<u32>, Vec<ByteSpan>)> {
        let enc = self.tokenizer.encode(text, self.add_special_tokens).map_err(tok_err)?;
        let mut ids = enc.get_ids().to_vec();
        let mut offsets = enc.get_offsets().to_vec();
        // A template that writes bos_token itself plus a tokenizer that adds one gives two; the
        // model was never trained on that, so keep one (llama.cpp warns about the same thing).
        let special = enc.get_special_tokens_mask();
        if ids.len() >= 2 && special.first() == Some(&1) && special.get(1) == Some(&0) && ids[0] == ids[1] {
            ids.remove(0);
            offsets.remove(0);
        }
        Ok((ids, offsets))
    }

    /// Fails when `text` holds the text of one of the tokens `special_texts` lists
    /// (`<|im_end|>` or `<|endoftext|>` in a scraped answer, a model's sampled
    /// `<|im_start|>`): encoded, it would be that token, the end-of-turn token would end the
    /// trained span part way through the response, and a stop token would be trained mid-answer.
    fn check_no_special_text(&self, field: &str, text: &str) -> Result<()> {
        let first = self.special_texts.iter().filter_map(|t| text.find(t.as_str()).map(|at| (at, t))).min();
        if let Some((at, token)) = first {
            bail!(
                "the {field} holds the special token {token:?} as text (byte {at}); it would be read as that token, so the row is not used"
            );
        }
        Ok(())
    }

    /// One (prompt, response) pair as token ids with the loss mask over the response and its
    /// end-of-turn token.
    pub fn encode_chat(&self, prompt: &str, response: &str) -> Result<Encoded> {
        self.encode_conversation(&[], prompt, response)
    }

    /// A conversation (`context`, then `prompt` and `response`) as token ids, with the loss mask
    /// over every assistant turn and the end-of-turn token closing it. Each assistant turn's
    /// span starts where the conversation up to it, rendered with the generation prompt, ends:
    /// that rendering must be a prefix of the whole conversation's.
    pub fn encode_conversation(&self, context: &[Turn], prompt: &str, response: &str) -> Result<Encoded> {
        for (i, t) in context.iter().enumerate() {
            self.check_no_special_text(&format!("turn {} ({})", i + 1, t.role.as_str()), &t.content)?;
        }
        self.check_no_special_text("prompt", prompt)?;
        self.check_no_special_text("response", response)?;
        let messages = self.messages(context, prompt, Some(response));
        let f = self.render_messages(&messages, false)?;
        let assistant = serde_json::json!(Role::Assistant.as_str());
        let turns = messages.iter().filter(|m| m["role"] == assistant).count();
        let mut spans = vec![];
        for (i, _) in messages.iter().enumerate().filter(|(_, m)| m["role"] == assistant) {
            let p = self.render_messages(&messages[..i], true)?;
            if p.is_empty() {
                bail!("chat template rendered an empty prompt");
            }
            // Which turn, where there are several: the message of a single turn stays as it was.
            let which = if context.is_empty() { String::new() } else { format!(" (up to assistant turn {})", spans.len() + 1) };
            if !f.starts_with(&p) {
                let at = p.bytes().zip(f.bytes()).take_while(|(a, b)| a == b).count();
                bail!(
                    "chat template is not prefix-stable: the rendered prompt with the generation prompt is not a prefix \
                     of the rendered conversation{which} (they differ at byte {at}: {:?} vs {:?})",
                    snippet(&p, at),
                    snippet(&f, at),
                );
            }
            let start = p.len();
            let end = start
                + f[start..].find(&self.eos_token).ok_or_else(|| {
                    anyhow!(
                        "the chat template does not end the assistant turn with the end-of-turn token {:?} (a base model's \
                         eos often ends the text, not the turn: name the template's own, e.g. `eos_token: \"<|im_end|>\"` in \
                         the recipe's tokenizer)",
                        self.eos_token
                    )
                })?
                + self.eos_token.len();
            // An earlier assistant turn must render as written and be closed by its own end of
            // turn: one the template rewrites (Qwen3's drops its reasoning) would train text the
            // data never held, and one it leaves open would train the next user turn up to the
            // next end of turn. (The last turn is the response, checked as it always was.)
            let content = messages[i]["content"].as_str().unwrap_or_default();
            let earlier = spans.len() + 1 < turns;
            if earlier && f[start..end - self.eos_token.len()].trim() != content.trim() {
                bail!(
                    "the chat template renders assistant turn {} otherwise than it is written, or does not close it with the \
                     end-of-turn token (it rewrites earlier turns, as a template that drops their reasoning does): train the \
                     conversation's exchanges as separate rows",
                    spans.len() + 1
                );
            }
            spans.push((start, end));
        }

        let (ids, offsets) = self.encode_text(&f)?;
        // Zero-width tokens were added by the post-processor, not read from the text.
        let loss_mask: Vec<u8> =
            offsets.iter().map(|&(s, e)| u8::from(s < e && spans.iter().any(|&(start, end)| s >= start && e <= end))).collect();
        debug_assert!(loss_mask.first() != Some(&1), "first token of a conversation must not be trained");
        if loss_mask.first() == Some(&1) {
            bail!("internal error: the first token of the conversation would be trained");
        }
        Ok(Encoded { ids, loss_mask })
    }

    /// The rendered prompt (up to the generation prompt) and its ids, for evaluation snapshots.
    pub fn encode_prompt(&self, prompt: &str) -> Result<(String, Vec<u32>)> {
        self.check_no_special_text("prompt", prompt)?;
        let p = self.render(prompt, None)?;
        let (ids, _) = self.encode_text(&p)?;
        Ok((p, ids))
    }

    /// Where `other` encodes `prompt`'s rendering as other ids than this tokenizer does, how:
    /// the first difference of the two texts (`"…A…" in HERE, "…B…" in THERE`, `labels` naming
    /// the two sides), or that the same text gives other ids (a begin token, another
    /// vocabulary). None where the ids agree.
    pub fn prompt_difference(&self, other: &ChatTokenizer, prompt: &str, labels: (&str, &str)) -> Result<Option<String>> {
        let ((text, ids), (other_text, other_ids)) = (self.encode_prompt(prompt)?, other.encode_prompt(prompt)?);
        if ids == other_ids {
            return Ok(None);
        }
        if text == other_text {
            return Ok(Some(format!(
                "the same text gives other ids ({} tokens in {}, {} in {})",
                ids.len(),
                labels.0,
                other_ids.len(),
                labels.1
            )));
        }
        // The texts agree before `at`, so it is a character boundary of both.
        let at = text
            .char_indices()
            .zip(other_text.chars())
            .find(|((_, a), b)| a != b)
            .map_or(text.len().min(other_text.len()), |((i, _), _)| i);
        let around = |t: &str| {
            let from = t[..at].char_indices().rev().nth(19).map_or(0, |(i, _)| i);
            let to = t[at..].char_indices().nth(40).map_or(t.len(), |(i, _)| at + i);
            format!("{:?}", &t[from..to])
        };
        Ok(Some(format!("they differ at byte {at}: {} in {}, {} in {}", around(&text), labels.0, around(&other_text), labels.1)))
    }

    /// [`Self::encode_conversation`] of each (context, prompt, response), in parallel.
    pub fn encode_chat_batch(&self, items: &[(&[Turn], &str, &str)]) -> Vec<Result<Encoded>> {
        items.par_iter().map(|(c, p, r)| self.encode_conversation(c, p, r)).collect()
    }

    /// Token counts of plain text: no template, no special tokens added (special tokens written in
    /// the text are still recognised).
    /// A text the tokenizer rejects has no count but its error.
    pub fn count_tokens_batch(&self, texts: &[&str]) -> Vec<Result<usize, String>> {
        texts.par_iter().map(|t| self.tokenizer.encode_fast(*t, false).map(|e| e.len()).map_err(|e| e.to_string())).collect()
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, false).unwrap_or_else(|e| format!("<decode error: {e}>"))
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The ids of the usual end-of-text tokens ([`END_TOKENS`]) that this tokenizer has as added
    /// special tokens. An ordinary vocabulary entry of the same text is not one: Qwen2's
    /// vocabulary holds `</s>` as plain id 128247, on which transformers does not stop.
    pub fn end_token_ids(&self) -> Vec<u32> {
        let added = self.tokenizer.get_added_tokens_decoder();
        let mut ids: Vec<u32> =
            added.iter().filter(|(_, t)| t.special && END_TOKENS.contains(&t.content.as_str())).map(|(&id, _)| id).collect();
        ids.sort_unstable();
        ids
    }

    /// The tokenizer as Hugging Face `tokenizer.json`.
    pub fn tokenizer_json(&self) -> String {
        self.tokenizer.to_string(false).expect("a built tokenizer serialises")
    }

    /// What the manifest records about this tokenizer; `source_path` is the file it came from.
    pub fn info(&self, source_path: &Path) -> Result<TokenizerInfo> {
        Ok(TokenizerInfo {
            path: source_path.display().to_string(),
            file_sha256: schemas::sha256_file(source_path)?,
            tokenizer_sha256: schemas::sha256_hex(self.tokenizer_json().as_bytes()),
            chat_template_sha256: schemas::sha256_hex(self.template.as_bytes()),
            vocab_size: self.vocab_size(),
            eos_token: self.eos_token.clone(),
            eos_id: self.eos_id,
            pad_id: self.pad_id,
            bos_token: self.bos_token.clone(),
            template_vars: self.template_vars.clone(),
            system_prompt: self.system_prompt.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::test_model_path;
    use std::sync::OnceLock;

    fn smol() -> &'static ChatTokenizer {
        static T: OnceLock<ChatTokenizer> = OnceLock::new();
        T.get_or_init(|| ChatTokenizer::from_gguf(&test_model_path(), None, None).unwrap())
    }

    struct Case {
        prompt: String,
        prompt_ids: Vec<u32>,
        greedy_ids: Vec<u32>,
        greedy_text: String,
    }

    fn cases() -> Vec<Case> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference_greedy.json");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let ids = |x: &serde_json::Value| -> Vec<u32> { x.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect() };
        let cases: Vec<Case> = v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Case {
                prompt: c["prompt"].as_str().unwrap().to_string(),
                prompt_ids: ids(&c["prompt_ids"]),
                greedy_ids: ids(&c["greedy_ids"]),
                greedy_text: c["greedy_text"].as_str().unwrap().to_string(),
            })
            .collect();
        assert_eq!(cases.len(), 2);
        cases
    }

    fn question(prompt: &str) -> &str {
        let start = prompt.find("<|im_start|>user\n").unwrap() + "<|im_start|>user\n".len();
        let len = prompt[start..].find("<|im_end|>").unwrap();
        &prompt[start..start + len]
    }

    #[test]
    fn special_tokens_and_ids() {
        let t = smol();
        assert_eq!(t.vocab_size(), 49152);
        assert_eq!((t.eos_token(), t.eos_id(), t.pad_id()), ("<|im_end|>", 2, 2));
        assert_eq!(t.id_to_token(1).as_deref(), Some("<|im_start|>"));
        assert_eq!(t.id_to_token(0).as_deref(), Some("<|endoftext|>"));
        // No bos is added: the template writes <|im_start|> itself.
        assert_eq!(t.tokenizer().encode("hi", true).unwrap().get_ids(), t.tokenizer().encode("hi", false).unwrap().get_ids());
    }

    #[test]
    fn prompts_match_reference_ids() {
        let t = smol();
        let qs: Vec<&str> = vec!["What is the capital of France?", "What is 12 + 7?"];
        for (c, q) in cases().iter().zip(qs) {
            assert_eq!(question(&c.prompt), q);
            let (text, ids) = t.encode_prompt(q).unwrap();
            assert_eq!(text, c.prompt);
            assert_eq!(ids, c.prompt_ids, "prompt ids for {q:?}");
        }
    }

    #[test]
    fn chat_ids_and_loss_mask_match_reference() {
        let t = smol();
        for c in cases() {
            let q = question(&c.prompt);
            let response = c.greedy_text.strip_suffix("<|im_end|>").unwrap();
            assert_eq!(*c.greedy_ids.last().unwrap(), 2);
            let enc = t.encode_chat(q, response).unwrap();

            let mut want = c.prompt_ids.clone();
            want.extend(&c.greedy_ids);
            want.push(198); // ChatML's newline after <|im_end|>
            assert_eq!(enc.ids, want, "ids for {q:?}");

            let n_p = c.prompt_ids.len();
            let n_g = c.greedy_ids.len();
            let want_mask: Vec<u8> = (0..want.len()).map(|i| u8::from(i >= n_p && i < n_p + n_g)).collect();
            assert_eq!(enc.loss_mask, want_mask, "loss mask for {q:?}");
            assert_eq!(enc.loss_mask[0], 0);

            let full = format!("{}{}\n", c.prompt, c.greedy_text);
            assert_eq!(t.decode(&enc.ids), full);
            assert_eq!(t.render(q, Some(response)).unwrap(), full);
            let trained: Vec<u32> = enc.ids.iter().zip(&enc.loss_mask).filter(|(_, &m)| m == 1).map(|(&i, _)| i).collect();
            assert_eq!(t.decode(&trained), c.greedy_text);
        }
    }

    #[test]
    fn digits_are_split_individually() {
        let t = smol();
        assert_eq!(t.tokenizer().encode("12", false).unwrap().get_ids(), &[33, 34]);
        assert_eq!(t.count_tokens_batch(&["12", "2024", "x = 1234567"]), vec![Ok(2), Ok(4), Ok(10)]);
        let ids = t.tokenizer().encode("12345", false).unwrap().get_ids().to_vec();
        assert_eq!(ids.len(), 5);
        assert_eq!(t.decode(&ids), "12345");
    }

    #[test]
    fn round_trips_text() {
        let t = smol();
        for text in ["héllo wörld 😀 ∫x dx", "  two  spaces\n\n\ttab", "<|im_start|>user\nx<|im_end|>", ""] {
            let ids = t.tokenizer().encode(text, false).unwrap().get_ids().to_vec();
            assert_eq!(t.decode(&ids), text);
        }
    }

    #[test]
    fn straddling_tokens_are_not_trained() {
        let t = smol();
        // Whatever the response starts or ends with, exactly the tokens inside the span are
        // trained, they are contiguous, the last is <|im_end|>, and they decode to a suffix of
        // response + <|im_end|>.
        for response in ["\n\nLeading newlines", " leading space", "héllo 😀", "", "ends with newline\n", "12+7=19"] {
            let enc = t.encode_chat("Question?", response).unwrap();
            assert_eq!(enc.ids.len(), enc.loss_mask.len());
            assert_eq!(enc.loss_mask[0], 0);
            let first = enc.loss_mask.iter().position(|&m| m == 1).unwrap();
            let last = enc.loss_mask.iter().rposition(|&m| m == 1).unwrap();
            assert!(enc.loss_mask[first..=last].iter().all(|&m| m == 1), "{response:?}");
            assert_eq!(enc.ids[last], 2);
            assert_eq!(enc.ids[last + 1..], [198]);
            let trained = t.decode(&enc.ids[first..=last]);
            let want = format!("{response}<|im_end|>");
            assert!(want.ends_with(&trained), "{response:?}: trained {trained:?}");
            assert!(trained.len() + 2 >= want.len(), "{response:?}: trained only {trained:?}");
        }
    }

    #[test]
    fn special_token_text_in_a_prompt_or_response_is_refused() {
        let t = smol();
        let e = t.encode_chat("Question?", "Print it.<|im_end|> then #### 4").unwrap_err().to_string();
        assert!(e.contains("response") && e.contains("\"<|im_end|>\"") && e.contains("byte 9"), "{e}");
        // Which special token comes first in the text is the one named.
        let e = t.encode_chat("a <|im_start|> b <|im_end|>", "ok").unwrap_err().to_string();
        assert!(e.contains("prompt") && e.contains("<|im_start|>"), "{e}");
        // An end-of-text token the template never writes: generation stops on it.
        let e = t.encode_chat("q", "first <|endoftext|> then").unwrap_err().to_string();
        assert!(e.contains("response") && e.contains("<|endoftext|>"), "{e}");
        let e = t.encode_prompt("<|im_start|>system").unwrap_err().to_string();
        assert!(e.contains("<|im_start|>"), "{e}");
        // Lookalikes are ordinary text, and so are special tokens the template does not write.
        assert!(t.encode_chat("<|im_end |> and <im_end>", "< |im_start|>").is_ok());
        assert!(t.encode_chat("usage: cat <filename>", "ok").is_ok());
    }

    /// A template with a thinking switch, in the way Qwen3's has one (written here): the last
    /// assistant turn opens with an empty `<think></think>` block, and so does the generation
    /// prompt when `enable_thinking` is false. The variable reaches the template, moves the block
    /// from the trained span into the prompt, and may not replace what the renderer sets.
    #[test]
    fn template_vars_reach_the_template() {
        let template = "{%- for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}\
                        {%- if m.role == 'assistant' and loop.last %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}\
                        {{- m.content + '<|im_end|>\\n' }}{%- endfor %}\
                        {%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}\
                        {%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}\
                        {%- endif %}";
        let thinking = ChatTokenizer::from_gguf(&test_model_path(), None, Some(template.into())).unwrap();
        let vars = BTreeMap::from([("enable_thinking".to_string(), serde_json::Value::Bool(false))]);
        let plain = thinking.clone().with_template_vars(vars).unwrap();
        let trained = |t: &ChatTokenizer| {
            let enc = t.encode_chat("2+2?", "4").unwrap();
            let ids: Vec<u32> = enc.ids.iter().zip(&enc.loss_mask).filter(|(_, &m)| m == 1).map(|(&i, _)| i).collect();
            t.decode(&ids)
        };
        assert_eq!(thinking.encode_prompt("2+2?").unwrap().0, "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(trained(&thinking), "<think>\n\n</think>\n\n4<|im_end|>");
        assert_eq!(
            plain.encode_prompt("2+2?").unwrap().0,
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        );
        assert_eq!(trained(&plain), "4<|im_end|>");
        for name in TEMPLATE_CONTEXT {
            let e = thinking.clone().with_template_vars(BTreeMap::from([(name.to_string(), true.into())])).unwrap_err().to_string();
            assert!(e.contains(&format!("`{name}` is set by the renderer")), "{e}");
        }
        let refused = |name: &str, value: serde_json::Value| {
            thinking.clone().with_template_vars(BTreeMap::from([(name.to_string(), value)])).unwrap_err().to_string()
        };
        // YAML's `no` and a shell's `False` are strings, which `is false` would not match.
        assert!(refused("enable_thinking", "False".into()).contains("is the string \"False\"; write true, false or null"));
        assert!(refused("enable_thinking", "no".into()).contains("is the string \"no\""));
        assert!(refused("a-b", true.into()).contains("`a-b` is not a name"));

        // Exported, the template sets the variable unless the caller does, so the folder renders
        // as the model was trained (and a caller can still pass another value).
        let exported = plain.exported_template();
        assert!(
            exported.starts_with("{%- if enable_thinking is not defined %}{%- set enable_thinking = false %}{%- endif %}\n"),
            "{exported}"
        );
        let reloaded = ChatTokenizer::from_gguf(&test_model_path(), None, Some(exported)).unwrap();
        assert_eq!(reloaded.encode_prompt("2+2?").unwrap(), plain.encode_prompt("2+2?").unwrap());
        assert_eq!(trained(&reloaded), "4<|im_end|>");
        let overridden = reloaded.with_template_vars(BTreeMap::from([("enable_thinking".to_string(), true.into())])).unwrap();
        assert_eq!(overridden.encode_prompt("2+2?").unwrap(), thinking.encode_prompt("2+2?").unwrap());
        assert_eq!(thinking.exported_template(), thinking.chat_template(), "no variables, the template as it is");

        // A snapshot records the variables, and its tokenizer renders with them again.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKENIZER_FILE), plain.tokenizer_json()).unwrap();
        std::fs::write(dir.path().join(TEMPLATE_FILE), plain.chat_template()).unwrap();
        let info = plain.info(&test_model_path()).unwrap();
        assert_eq!(info.template_vars["enable_thinking"], serde_json::json!(false));
        let back = ChatTokenizer::from_snapshot(dir.path(), &info).unwrap();
        assert_eq!(back.encode_prompt("2+2?").unwrap(), plain.encode_prompt("2+2?").unwrap());
    }

    #[test]
    fn system_prompt_replaces_default() {
        let t = ChatTokenizer::from_gguf(&test_model_path(), Some("You are a math tutor.".into()), None).unwrap();
        let (p, ids) = t.encode_prompt("Hi").unwrap();
        assert_eq!(p, "<|im_start|>system\nYou are a math tutor.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(ids[0], 1);
        let enc = t.encode_chat("Hi", "Hello").unwrap();
        assert_eq!(enc.loss_mask.iter().filter(|&&m| m == 1).count(), 2, "Hello + <|im_end|>");

        // Recorded in the snapshot, and rendered with again from it.
        let info = t.info(&test_model_path()).unwrap();
        assert_eq!(info.system_prompt.as_deref(), Some("You are a math tutor."));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKENIZER_FILE), t.tokenizer_json()).unwrap();
        std::fs::write(dir.path().join(TEMPLATE_FILE), t.chat_template()).unwrap();
        assert_eq!(ChatTokenizer::from_snapshot(dir.path(), &info).unwrap().encode_prompt("Hi").unwrap(), (p.clone(), ids.clone()));
        let default = ChatTokenizer::from_gguf(&test_model_path(), None, None).unwrap();
        assert!(default.info(&test_model_path()).unwrap().system_prompt.is_none());
        assert_eq!(default.exported_template(), default.chat_template(), "no system prompt, the template as it is");

        // Exported, the template puts it before a conversation without a system message (quotes,
        // backslashes, control and non-ASCII characters survive the literal; transformers' jinja2
        // renders this template to the same text), and a caller's own system message wins.
        let tricky = "Say \"hi\" \\ then\nanswer,\tin français 🙂.";
        let t = ChatTokenizer::from_gguf(&test_model_path(), Some(tricky.into()), None).unwrap();
        let reloaded = ChatTokenizer::from_gguf(&test_model_path(), None, Some(t.exported_template())).unwrap();
        assert_eq!(reloaded.encode_prompt("Hi").unwrap(), t.encode_prompt("Hi").unwrap());
        assert!(reloaded.encode_prompt("Hi").unwrap().0.contains(&format!("system\n{tricky}<|im_end|>")));
        let own = ChatTokenizer::from_gguf(&test_model_path(), Some("Be terse.".into()), Some(t.exported_template())).unwrap();
        let (p, _) = own.encode_prompt("Hi").unwrap();
        assert!(p.starts_with("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user") && !p.contains("then"), "{p}");
    }

    #[test]
    fn template_errors() {
        let path = test_model_path();
        let not_prefix_stable = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}\
                                 {% if add_generation_prompt %}assistant says:{% endif %}";
        let t = ChatTokenizer::from_gguf(&path, None, Some(not_prefix_stable.into())).unwrap();
        let e = t.encode_chat("q", "a").unwrap_err().to_string();
        assert!(e.contains("not prefix-stable"), "{e}");

        let no_eos = "{% for m in messages %}{{ m.content }}\n{% endfor %}";
        let t = ChatTokenizer::from_gguf(&path, None, Some(no_eos.into())).unwrap();
        let e = t.encode_chat("q", "a").unwrap_err().to_string();
        assert!(e.contains("end-of-turn"), "{e}");

        let raises = "{% if messages[0].role != 'system' %}{{ raise_exception('need a system turn') }}{% endif %}";
        let t = ChatTokenizer::from_gguf(&path, None, Some(raises.into())).unwrap();
        let e = t.encode_prompt("q").unwrap_err().to_string();
        assert!(e.contains("need a system turn"), "{e}");

        assert!(ChatTokenizer::from_gguf(&path, None, Some("{% if %}".into())).is_err());
    }

    #[test]
    fn loop_controls_work_as_in_transformers() {
        // transformers renders with jinja2's loopcontrols extension; Qwen-style templates break
        // out of a loop over the messages.
        let tpl = "{% for m in messages %}{% if m.role == 'assistant' %}{% break %}{% endif %}\
                   {% if m.content == 'skip' %}{% continue %}{% endif %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
                   {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let t = ChatTokenizer::from_gguf(&test_model_path(), Some("skip".into()), Some(tpl.into())).unwrap();
        let (p, _) = t.encode_prompt("Hi").unwrap();
        assert_eq!(p, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(t.render("Hi", Some("A")).unwrap(), "<|im_start|>user\nHi<|im_end|>\n");
    }

    #[test]
    fn python_string_methods_work() {
        let tpl = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'].strip() }}<|im_end|>\n{% endfor %}\
                   {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let t = ChatTokenizer::from_gguf(&test_model_path(), None, Some(tpl.into())).unwrap();
        let (p, _) = t.encode_prompt("  padded  ").unwrap();
        assert_eq!(p, "<|im_start|>user\npadded<|im_end|>\n<|im_start|>assistant\n");
        let enc = t.encode_chat("q", "  a  ").unwrap();
        assert_eq!(enc.loss_mask.iter().filter(|&&m| m == 1).count(), 2);
    }

    /// A conversation trains every assistant turn with its end-of-turn token, and nothing else:
    /// the trained tokens, run by run, decode to the assistant turns as written. Its system turn
    /// takes the place of the template's default one.
    #[test]
    fn a_conversation_trains_every_assistant_turn() {
        let t = smol();
        let turn = |role, content: &str| Turn { role, content: content.into() };
        let context = [turn(Role::System, "You answer in numbers."), turn(Role::User, "What is 2 + 2?"), turn(Role::Assistant, "4")];
        let enc = t.encode_conversation(&context, "And 3 + 3?", "6, since 3 + 3 = 6.").unwrap();
        let runs: Vec<String> = enc
            .ids
            .iter()
            .zip(&enc.loss_mask)
            .collect::<Vec<_>>()
            .chunk_by(|a, b| a.1 == b.1)
            .filter(|run| *run[0].1 == 1)
            .map(|run| t.decode(&run.iter().map(|(&id, _)| id).collect::<Vec<_>>()))
            .collect();
        assert_eq!(runs, ["4<|im_end|>", "6, since 3 + 3 = 6.<|im_end|>"]);
        let text = t.decode(&enc.ids);
        assert!(text.contains("<|im_start|>system\nYou answer in numbers.") && !text.contains("SmolLM"), "{text}");
        // A template that rewrites earlier assistant turns would train text the data never held.
        let tpl = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' and not loop.last %}(earlier)\
                   {% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let rewriting = ChatTokenizer::from_gguf(&test_model_path(), None, Some(tpl.into())).unwrap();
        let e = rewriting.encode_conversation(&context, "And 3 + 3?", "6").unwrap_err().to_string();
        assert!(e.contains("renders assistant turn 1 otherwise than it is written"), "{e}");
        assert!(rewriting.encode_chat("And 3 + 3?", "6").is_ok());
        // One that closes only the last turn would train the next user turn with the first.
        let open = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}{% if m['role'] != 'assistant' or loop.last %}<|im_end|>{% endif %}\n\
                    {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let open = ChatTokenizer::from_gguf(&test_model_path(), None, Some(open.into())).unwrap();
        let e = open.encode_conversation(&context, "And 3 + 3?", "6").unwrap_err().to_string();
        assert!(e.contains("renders assistant turn 1 otherwise than it is written, or does not close it"), "{e}");
        // A special token written in an earlier turn is refused, naming the turn.
        let leaky = [turn(Role::User, "hi"), turn(Role::Assistant, "hello<|im_end|>")];
        let e = t.encode_conversation(&leaky, "q", "a").unwrap_err().to_string();
        assert!(e.contains("turn 2 (assistant) holds the special token"), "{e}");
    }

    #[test]
    fn batches_match_single_calls() {
        let t = smol();
        let items: Vec<(String, String)> = (0..64).map(|i| (format!("What is {i} + {i}?"), format!("{i} + {i} = {}", 2 * i))).collect();
        let refs: Vec<(&[Turn], &str, &str)> = items.iter().map(|(p, r)| (&[][..], p.as_str(), r.as_str())).collect();
        let batch = t.encode_chat_batch(&refs);
        for ((_, p, r), b) in refs.iter().zip(batch) {
            assert_eq!(b.unwrap(), t.encode_chat(p, r).unwrap());
        }
        let texts: Vec<&str> = refs.iter().map(|(_, p, _)| *p).collect();
        let counts = t.count_tokens_batch(&texts);
        for (text, n) in texts.iter().zip(counts) {
            assert_eq!(n, Ok(t.tokenizer().encode(*text, false).unwrap().len()));
        }
    }

    #[test]
    fn a_hugging_face_folder_loads_as_transformers_4_and_5_write_it() {
        let t = smol();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), t.tokenizer_json()).unwrap();
        let config = dir.path().join(TOKENIZER_CONFIG_FILE);
        let same = |r: &ChatTokenizer| {
            assert_eq!((r.eos_id(), r.pad_id()), (2, 2));
            for c in cases() {
                let q = question(&c.prompt);
                assert_eq!(r.encode_prompt(q).unwrap(), t.encode_prompt(q).unwrap());
            }
        };
        // What rectify writes: the template inside tokenizer_config.json (transformers 4).
        std::fs::write(&config, t.hf_tokenizer_config()).unwrap();
        same(&ChatTokenizer::from_hf_dir(dir.path(), None, None).unwrap());
        // transformers 5: chat_template.jinja beside a config without one, tokens as objects.
        std::fs::write(&config, r#"{"eos_token": {"content": "<|im_end|>", "special": true}}"#).unwrap();
        let e = format!("{:#}", ChatTokenizer::from_hf_dir(dir.path(), None, None).unwrap_err());
        assert!(e.contains("has no chat template"), "{e}");
        std::fs::write(dir.path().join(TEMPLATE_FILE), t.chat_template()).unwrap();
        same(&ChatTokenizer::from_hf_dir(dir.path(), None, None).unwrap());
        // Named templates: the `default` one.
        std::fs::remove_file(dir.path().join(TEMPLATE_FILE)).unwrap();
        let named = serde_json::json!({"eos_token": "<|im_end|>", "chat_template": [
            {"name": "tool_use", "template": "unused"}, {"name": "default", "template": t.chat_template()}]});
        std::fs::write(&config, named.to_string()).unwrap();
        same(&ChatTokenizer::from_hf_dir(dir.path(), None, None).unwrap());
        // Tokens from special_tokens_map.json where tokenizer_config.json has none.
        std::fs::write(&config, named.to_string().replace(r#""eos_token":"<|im_end|>","#, "")).unwrap();
        assert!(ChatTokenizer::from_hf_dir(dir.path(), None, None).is_err());
        std::fs::write(dir.path().join("special_tokens_map.json"), r#"{"eos_token": {"content": "<|im_end|>"}}"#).unwrap();
        same(&ChatTokenizer::from_hf_dir(dir.path(), None, None).unwrap());
        std::fs::remove_file(dir.path().join("special_tokens_map.json")).unwrap();
        // No end-of-turn token, or one not in the vocabulary: errors naming the file.
        for bad in [r#"{"chat_template": "x"}"#, r#"{"chat_template": "x", "eos_token": "<|nope|>"}"#] {
            std::fs::write(&config, bad).unwrap();
            let e = format!("{:#}", ChatTokenizer::from_hf_dir(dir.path(), None, None).unwrap_err());
            assert!(e.contains(TOKENIZER_CONFIG_FILE) && (e.contains("eos_token") || e.contains("<|nope|>")), "{e}");
        }
    }

    #[test]
    fn tokenizer_json_reloads_to_the_same_ids() {
        let t = smol();
        let dir = tempfile::tempdir().unwrap();
        let tj = dir.path().join("tokenizer.json");
        let tpl = dir.path().join("chat_template.jinja");
        std::fs::write(&tj, t.tokenizer_json()).unwrap();
        std::fs::write(&tpl, t.chat_template()).unwrap();
        let r = ChatTokenizer::from_tokenizer_json(&tj, &tpl, "<|im_end|>", None, None).unwrap();
        assert_eq!(r.tokenizer_json(), t.tokenizer_json());
        assert_eq!((r.eos_id(), r.pad_id(), r.vocab_size()), (2, 2, 49152));
        for c in cases() {
            let q = question(&c.prompt);
            assert_eq!(r.encode_prompt(q).unwrap(), t.encode_prompt(q).unwrap());
            let resp = c.greedy_text.strip_suffix("<|im_end|>").unwrap();
            assert_eq!(r.encode_chat(q, resp).unwrap(), t.encode_chat(q, resp).unwrap());
        }
        let text = "Mixed 123 text, ünïcödé and <|im_end|> tokens\n\n";
        assert_eq!(r.tokenizer().encode(text, false).unwrap().get_ids(), t.tokenizer().encode(text, false).unwrap().get_ids());

        let ti = t.info(&test_model_path()).unwrap();
        let ri = r.info(&tj).unwrap();
        assert_eq!(ti.tokenizer_sha256, ri.tokenizer_sha256);
        assert_eq!(ti.chat_template_sha256, ri.chat_template_sha256);
        assert_eq!(ri.file_sha256, schemas::sha256_hex(t.tokenizer_json().as_bytes()));
        assert_eq!((ti.vocab_size, ti.eos_token.as_str(), ti.eos_id, ti.pad_id), (49152, "<|im_end|>", 2, 2));

        let e = ChatTokenizer::from_tokenizer_json(&tj, &tpl, "<|no_such|>", None, None).unwrap_err().to_string();
        assert!(e.contains("<|no_such|>"), "{e}");

        // A template that writes `bos_token` needs to be told which token that is: not rendered
        // empty by default.
        std::fs::write(&tpl, "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}<|im_end|>").unwrap();
        let e = ChatTokenizer::from_tokenizer_json(&tj, &tpl, "<|im_end|>", None, None).unwrap_err().to_string();
        assert!(e.contains("writes `bos_token`") && e.contains("tokenizer.bos_token"), "{e}");
        let with = |bos| ChatTokenizer::from_tokenizer_json(&tj, &tpl, "<|im_end|>", Some(bos), None);
        assert_eq!(with("<|endoftext|>").unwrap().encode_prompt("Hi").unwrap().1[0], 0);
        assert_ne!(with("").unwrap().encode_prompt("Hi").unwrap().1[0], 0);
        assert!(with("<|nope|>").unwrap_err().to_string().contains("not in the vocabulary"));
    }

    /// A minimal GGUF with only tokenizer metadata, for pre-tokenizer selection.
    fn tiny_gguf(pre: Option<&str>, add_bos: bool) -> tempfile::NamedTempFile {
        tiny_gguf_arch(pre, None, add_bos)
    }

    /// [`tiny_gguf`] with a `general.architecture`.
    fn tiny_gguf_arch(pre: Option<&str>, arch: Option<&str>, add_bos: bool) -> tempfile::NamedTempFile {
        use crate::gguf::Value;
        let mut w = crate::gguf_writer::GgufWriter::new();
        if let Some(a) = arch {
            w.kv("general.architecture", Value::str(a));
        }
        w.kv("tokenizer.ggml.model", Value::str("gpt2"));
        if let Some(p) = pre {
            w.kv("tokenizer.ggml.pre", Value::str(p));
        }
        // "!a" merges first, so that "!ab" tells the regexes apart: Qwen2's keeps "!ab" in one
        // piece (-> "!a" "b"), GPT-2's splits off "!" (-> "!" "ab").
        w.kv("tokenizer.ggml.tokens", Value::strings(["a", "b", "ab", "<s>", "</s>", "1", "2", "12", "!", "!a"]))
            .kv("tokenizer.ggml.merges", Value::strings(["! a", "a b", "1 2"]))
            .kv("tokenizer.ggml.token_type", Value::i32s([1, 1, 1, 3, 3, 1, 1, 1, 1, 1]))
            .kv("tokenizer.ggml.bos_token_id", Value::U32(3))
            .kv("tokenizer.ggml.eos_token_id", Value::U32(4))
            .kv("tokenizer.ggml.add_bos_token", Value::Bool(add_bos))
            .kv(
                "tokenizer.chat_template",
                Value::str(
                    "{{ bos_token }}{% for m in messages %}{{ m.content }}{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}",
                ),
            );
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), w.to_bytes()).unwrap();
        f
    }

    #[test]
    fn pre_tokenizer_selection() {
        let ids = |pre: Option<&str>, text: &str| -> Vec<u32> {
            let t = ChatTokenizer::from_gguf(tiny_gguf(pre, false).path(), None, None).unwrap();
            t.tokenizer().encode(text, false).unwrap().get_ids().to_vec()
        };
        assert_eq!(ids(Some("smollm"), "ab12"), vec![2, 5, 6]);
        assert_eq!(ids(Some("gpt-2"), "ab12"), vec![2, 7]);
        assert_eq!(ids(Some("qwen2"), "ab12"), vec![2, 5, 6]);
        assert_eq!(ids(Some("smollm"), "!ab"), vec![8, 2]);
        assert_eq!(ids(Some("qwen2"), "!ab"), vec![9, 1]);

        let e = format!("{:#}", ChatTokenizer::from_gguf(tiny_gguf(Some("llama-bpe"), false).path(), None, None).unwrap_err());
        assert!(e.contains("\"llama-bpe\"") && e.contains("not supported"), "{e}");
    }

    /// Without `tokenizer.ggml.pre` the architecture decides only where it is unambiguous:
    /// qwen2 gets Qwen2's pre-tokenizer; anything else is refused, never given SmolLM2's.
    #[test]
    fn missing_pre_tokenizer_follows_architecture_or_fails() {
        let t = ChatTokenizer::from_gguf(tiny_gguf_arch(None, Some("qwen2"), false).path(), None, None).unwrap();
        assert_eq!(t.tokenizer().encode("!ab", false).unwrap().get_ids(), &[9, 1]);
        for arch in [Some("llama"), None] {
            let e = format!("{:#}", ChatTokenizer::from_gguf(tiny_gguf_arch(None, arch, false).path(), None, None).unwrap_err());
            assert!(e.contains("no tokenizer.ggml.pre") && e.contains("tokenizer_json"), "{e}");
        }
    }

    #[test]
    fn add_bos_token_is_honoured_once() {
        let t = ChatTokenizer::from_gguf(tiny_gguf(Some("smollm"), true).path(), None, None).unwrap();
        // The template writes <s> and the tokenizer would add another: only one remains.
        let (p, ids) = t.encode_prompt("ab").unwrap();
        assert_eq!(p, "<s>ab");
        assert_eq!(ids, vec![3, 2]);
        let enc = t.encode_chat("ab", "12").unwrap();
        assert_eq!(enc.ids, vec![3, 2, 5, 6, 4]);
        assert_eq!(enc.loss_mask, vec![0, 0, 1, 1, 1]);
        assert_eq!(t.tokenizer().encode("ab", true).unwrap().get_ids(), &[3, 2]);

        let t = ChatTokenizer::from_gguf(tiny_gguf(Some("smollm"), false).path(), None, None).unwrap();
        assert_eq!(t.tokenizer().encode("ab", true).unwrap().get_ids(), &[2]);
        assert_eq!(t.eos_id(), 4);
    }

    /// TRL's assistant-only-loss templates mark the reply with `{% generation %}`: it renders
    /// as if the tags were not there, whitespace control included.
    #[test]
    fn generation_tags_render_their_body() {
        let tagged = "{% for m in messages %}{% if m['role'] == 'assistant' %}{%- generation -%}\n {{ m['content'] + eos_token }}{%+ endgeneration %}\
                      {% else %}{{ m['content'] }}{% endif %}{% endfor %}";
        let plain = "{% for m in messages %}{% if m['role'] == 'assistant' %}{%- if true -%}\n {{ m['content'] + eos_token }}{%+ endif %}\
                     {% else %}{{ m['content'] }}{% endif %}{% endfor %}";
        assert_eq!(without_generation_tags(tagged), plain);
        assert_eq!(without_generation_tags("{% if x %}a{% endif %}{% unclosed"), "{% if x %}a{% endif %}{% unclosed");
        let gguf = tiny_gguf(Some("smollm"), false);
        let [a, b] = [tagged, plain].map(|t| ChatTokenizer::from_gguf(gguf.path(), None, Some(t.to_string())).unwrap());
        let (ea, eb) = (a.encode_chat("ab", "12").unwrap(), b.encode_chat("ab", "12").unwrap());
        assert_eq!((ea.ids, ea.loss_mask), (eb.ids, eb.loss_mask));
        assert_eq!(a.chat_template(), tagged, "exported as written");
    }

    /// Under a template that writes no begin token, llama.cpp adds a GGUF's (its add_bos_token)
    /// and transformers' `apply_chat_template` adds none from a `tokenizer.json` whose
    /// post-processor would (`add_special_tokens=False`); a snapshot's tokenizer encodes as its
    /// source did.
    #[test]
    fn a_hugging_face_tokenizer_adds_no_post_processor_token_to_the_template() {
        let dir = tempfile::tempdir().unwrap();
        // GGUF files are told by their extension, as everywhere in rectify.
        let gguf = dir.path().join("tiny.gguf");
        std::fs::copy(tiny_gguf(Some("smollm"), true).path(), &gguf).unwrap();
        let plain = "{% for m in messages %}{{ m['content'] }}{% endfor %}".to_string();
        let from_gguf = ChatTokenizer::from_gguf(&gguf, None, Some(plain.clone())).unwrap();
        assert_eq!(from_gguf.encode_prompt("ab").unwrap().1, vec![3, 2]);
        let hf_dir = dir.path().join("hf");
        std::fs::create_dir(&hf_dir).unwrap();
        from_gguf.save_hf_files(&hf_dir).unwrap();
        assert_eq!(from_gguf.tokenizer().encode("ab", true).unwrap().get_ids(), &[3, 2], "the post-processor adds <s>");
        let hf = ChatTokenizer::from_hf_dir(&hf_dir, None, Some(plain.clone())).unwrap();
        assert_eq!(hf.encode_prompt("ab").unwrap().1, vec![2]);
        // The exported template writes the begin token the GGUF's tokenizer added, so the
        // folder (as transformers reads it) prompts as the GGUF did; once, where the template
        // writes it itself.
        assert!(std::fs::read_to_string(hf_dir.join(TEMPLATE_FILE)).unwrap().contains("{{- bos_token }}"));
        assert_eq!(ChatTokenizer::from_hf_dir(&hf_dir, None, None).unwrap().encode_prompt("ab").unwrap().1, vec![3, 2]);
        let writes = ChatTokenizer::from_gguf(&gguf, None, Some(format!("{{{{ bos_token }}}}{plain}"))).unwrap();
        assert_eq!(writes.encode_prompt("ab").unwrap().1, vec![3, 2]);
        assert!(!writes.exported_template().contains("{{- bos_token }}"));
        // The manifest names the file the tokens came from (pipeline's `load_tokenizer`).
        for (t, source, want) in [(&from_gguf, gguf, vec![3, 2]), (&hf, hf_dir.join(TOKENIZER_FILE), vec![2])] {
            let snap = tempfile::tempdir().unwrap();
            std::fs::write(snap.path().join(TOKENIZER_FILE), t.tokenizer_json()).unwrap();
            std::fs::write(snap.path().join(TEMPLATE_FILE), t.chat_template()).unwrap();
            let info = t.info(&source).unwrap();
            assert_eq!(ChatTokenizer::from_snapshot(snap.path(), &info).unwrap().encode_prompt("ab").unwrap().1, want, "{source:?}");
        }
    }
}
