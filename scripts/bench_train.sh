#!/usr/bin/env bash
# `make bench-train`: tokens/s and peak memory of one forward + backward + AdamW step of
# SmolLM2-135M on CPU at several row lengths, and the achieved GFLOP/s as a fraction of a large
# f32 matmul measured in the same run. Each length runs in its own process so peak RSS is its own.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${BENCH_OUT:-bench-out}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
LENGTHS=${LENGTHS:-"256 512 1024 2048"}
mkdir -p "$OUT"
cargo build --release --workspace --examples
make --no-print-directory model
BIN=$CARGO_TARGET_DIR/release/examples/bench_train
$BIN --matmul 2048 > "$OUT/train_matmul.json"
: > "$OUT/train_steps.jsonl"
for n in $LENGTHS; do
  $BIN "$MODEL" "$n" 256 3 >> "$OUT/train_steps.jsonl"
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
mm = json.load(open(f"{out}/train_matmul.json"))
print(f"ceiling: {mm['matmul_n']}^3 f32 matmul at {mm['gflops']:.1f} GFLOP/s (baseline)")
print(f"{'seq_len':>8} {'step s':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'of ceiling':>10} {'peak RSS MiB':>13}")
for line in open(f"{out}/train_steps.jsonl"):
    r = json.loads(line)
    print(f"{r['seq_len']:>8} {r['step_seconds']:>8.2f} {r['tokens_per_second']:>9.0f} {r['gflops']:>8.1f} {r['gflops']/mm['gflops']:>10.1%} {r['peak_rss_mib']:>13.0f}")
PY
