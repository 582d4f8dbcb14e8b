#!/usr/bin/env bash
# `make check-export`: does the Hugging Face folder `trainer export` writes mean what rectify
# means? Two independent readers:
#   1. numpy (scripts/check_hf_export.py): transformers' Llama / Qwen2 / Qwen3 forward written out in numpy
#      must greedy-decode the model's reference prompts to the reference ids.
#   2. transformers itself: `AutoModelForCausalLM.from_pretrained` on the folder must give the same
#      per-token log-probabilities as rectify on the default snapshot's first packed rows (each
#      example run alone; tolerance below). It needs Python with torch and transformers 5; where
#      there is none it says SKIPPED and how to get one.
#   3. Where the export carries a tokenizer (a GGUF's): transformers' `AutoTokenizer` and
#      `apply_chat_template` on the folder must give the prompt text and ids rectify gives.
#
#   scripts/check_export.sh [MODEL ...]   (default: the default model and the three checkpoints
#                                          transformers 5 saved in model/tests/fixtures/transformers5)
# Step 1 needs reference greedy ids, which exist for the default model only.
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT_MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ $# -gt 0 ] || set -- "$DEFAULT_MODEL" model/tests/fixtures/transformers5/llama3-tied model/tests/fixtures/transformers5/qwen2-untied \
  model/tests/fixtures/transformers5/qwen3-tied
TRAINER=${TRAINER:-${CARGO_TARGET_DIR:-target}/release/trainer}
OUT=${BENCH_OUT:-bench-out}/export-check
SNAPSHOT=${SNAPSHOT:-snapshots/default-unscored}
ROWS=${ROWS:-2}
# Max |rectify - transformers| per log-probability, in nats. Both run the same f32 weights; what is
# left is float summation order (measured up to 9.9e-5 over SmolLM2's 30 layers, see the README).
TOL=${TOL:-5e-4}
rm -rf "$OUT" && mkdir -p "$OUT"
# A Python with torch and transformers: $TORCH_PYTHON, the cache venv the README's set-up makes, or python3.
py=""
for c in "${TORCH_PYTHON:-}" "$HOME/.cache/rectify/venv-torch/bin/python" python3; do
  if [ -n "$c" ] && "$c" -c "import torch, transformers" 2> /dev/null; then py=$c; break; fi
done
[ -f "$SNAPSHOT/manifest.json" ] || { echo "check_export.sh: $SNAPSHOT is missing (make data, or make $SNAPSHOT/manifest.json)" >&2; exit 2; }
n=0
for MODEL in "$@"; do
  n=$((n + 1))
  dir=$OUT/$n-$(basename "$MODEL")
  mkdir -p "$dir"
  echo "=== $MODEL"
  "$TRAINER" export --model "$MODEL" --out "$dir/model"
  if [ "$MODEL" = "$DEFAULT_MODEL" ]; then
    echo "== 1. numpy forward of the exported folder vs the reference greedy ids"
    [ -x .venv-bench/bin/python ] || (python3 -m venv .venv-bench && .venv-bench/bin/pip install --quiet "tokenizers==0.22.1")
    .venv-bench/bin/pip install --quiet numpy safetensors
    .venv-bench/bin/python scripts/check_hf_export.py "$dir/model" model-files/tests/fixtures/reference_greedy.json
  fi
  echo "== 2. transformers AutoModelForCausalLM on the exported folder vs rectify"
  if [ -z "$py" ]; then
    echo "SKIPPED: no Python with torch and transformers (tried \$TORCH_PYTHON, ~/.cache/rectify/venv-torch, python3)."
    echo "  To run it (PyPI, as make bench-train installs it): python3 -m venv ~/.cache/rectify/venv-torch &&"
    echo "    ~/.cache/rectify/venv-torch/bin/pip install torch 'transformers>=5' safetensors"
    continue
  fi
  "$TRAINER" rows --snapshot "$SNAPSHOT" --rows "$ROWS" --model "$MODEL" --out "$dir/rows.jsonl"
  printf '{"model": "%s", "rows": "%s", "device": "cpu"}\n' "$dir/model" "$dir/rows.jsonl" > "$dir/args.json"
  "$py" scripts/gpu_check.py --worker logprobs "$dir/args.json" > "$dir/transformers.json"
  "$py" - "$dir/transformers.json" "$TOL" <<'PY'
import json, sys
import transformers, torch
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
tol = float(sys.argv[2])
print(f"transformers {transformers.__version__} (torch {torch.__version__}) loading the export, {r['tokens']} tokens:")
print(f"  max |rectify - transformers| {r['max_abs_diff']:.2e} nats, mean {r['mean_abs_diff']:.2e} (tolerance {tol:g})")
print(f"  packed with the block mask: max {r['packed_block_mask_max_abs_diff']:.2e}; plain causal over the row "
      f"(must differ): {r['leaky_causal_max_abs_diff']:.2f}")
ok = r["max_abs_diff"] <= tol and r["packed_block_mask_max_abs_diff"] <= tol and r["leaky_causal_max_abs_diff"] > 10 * tol
print("export check:", "PASSED" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
  [ -f "$dir/model/tokenizer_config.json" ] || continue
  echo "== 3. transformers AutoTokenizer + apply_chat_template on the exported folder vs rectify's prompt"
  "$TRAINER" generate --model "$dir/model" --prompt "What is 12 + 7? Answer in words & digits." --max-new-tokens 1 --json > "$dir/prompt.json"
  "$py" - "$dir/model" "$dir/prompt.json" <<'PY'
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
r = json.loads(open(sys.argv[2]).read().splitlines()[0])
messages = [{"role": "user", "content": "What is 12 + 7? Answer in words & digits."}]
text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
ids = tok(text, add_special_tokens=False)["input_ids"]
print(f"  eos {tok.eos_token!r} (id {tok.eos_token_id}), pad {tok.pad_token!r}; prompt {len(ids)} tokens")
ok = text == r["prompt"] and ids == r["prompt_ids"] and r["ids"] and tok.eos_token_id is not None
if not ok:
    print(f"  transformers: {text!r} {ids}\n  rectify:      {r['prompt']!r} {r['prompt_ids']}")
print("tokenizer check:", "PASSED" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
done
