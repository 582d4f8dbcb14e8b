#!/usr/bin/env bash
# `make bench-generate`: new tokens/s of KV-cache batched decoding of SmolLM2-135M on CPU at
# several batch sizes, against the baseline measured in the same run: cache-free greedy decoding
# (the whole sequence re-run per token). One batch at a time, as one `trainer eval` thread runs.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${BENCH_OUT:-bench-out}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
NEW_TOKENS=${NEW_TOKENS:-64}
BATCHES=${BATCHES:-1,8,16,32}
mkdir -p "$OUT"
cargo build --release --workspace --examples
make --no-print-directory model
[ -f snapshots/eval/gsm8k_test/manifest.json ] ||
  "$CARGO_TARGET_DIR/release/pipeline" build --recipe datasets/recipes/eval/gsm8k_test.yaml --out snapshots/eval/gsm8k_test --force > /dev/null
"$CARGO_TARGET_DIR/release/examples/bench_generate" "$MODEL" snapshots/eval/gsm8k_test "$NEW_TOKENS" "$BATCHES" > "$OUT/generate.jsonl"
python3 - "$OUT/generate.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'mode':>9} {'batch':>6} {'new tokens':>11} {'tokens/s':>9} {'vs no cache':>12}")
for r in rows:
    print(f"{r['mode']:>9} {r['batch']:>6} {r['new_tokens']:>11} {r['tokens_per_second']:>9.1f} {r['speedup']:>11.1f}x")
print("(GSM8K test prompts; every sequence decodes exactly the given number of new tokens, prefill included in the time)")
PY
