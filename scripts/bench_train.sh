#!/usr/bin/env bash
# `make bench-train`: DFT training steps of SmolLM2-135M on CPU, rectify against PyTorch on the
# same rows, model, settings and cores, in the same run. For each row length (LENGTHS), STEPS
# steps of ROWS_PER_STEP rows each (the default snapshot's first rows, cut to the length; 2 rows
# as `make train` takes them): tokens/s and peak RSS of each side, each in its own process so the
# peak is its own, and the ratio printed as `N.NNx vs PyTorch`. rectify runs a step as the
# training loop does (one row per core, side by side), PyTorch one row after the other with its
# own threads on both cores. rectify again with per-layer activation recompute at
# RECOMPUTE_LENGTHS, once per RECOMPUTE setting (`all` blocks, or the first N, as the recipe key).
# Then LoRA at LORA_LENGTHS: adapters of rank LORA_RANK (alpha 2 x rank) on all seven projections,
# rectify (with every block recomputed, as datasets/recipes/train/lora.yaml runs) against PEFT
# starting from the same adapters, which rectify writes as a PEFT folder.
# PyTorch (torch + transformers, from PyPI) is installed into a cache venv on first use; the
# PyTorch side is `scripts/gpu_check.py --worker train`, the GPU check's own baseline, on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${BENCH_OUT:-bench-out}/train
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
SNAPSHOT=${SNAPSHOT:-snapshots/default-unscored}
LENGTHS=${LENGTHS:-"512 1024 2048"}
RECOMPUTE_LENGTHS=${RECOMPUTE_LENGTHS:-"2048"}
RECOMPUTE=${RECOMPUTE:-"20 all"}
LORA_LENGTHS=${LORA_LENGTHS:-"2048"}
LORA_RANK=${LORA_RANK:-16}
STEPS=${STEPS:-3}
ROWS_PER_STEP=${ROWS_PER_STEP:-2}
VENV=${TORCH_VENV:-$HOME/.cache/rectify/venv-torch}
# The versions the README's figures were measured with; another venv is used as it is, and its
# versions are printed with the table.
TORCH_PIN=${TORCH_PIN:-"torch==2.15.* transformers==5.25.* peft==0.22.*"}
. scripts/bench_threads.sh
mkdir -p "$OUT"
cargo build --release --workspace --examples
make --no-print-directory model
[ -f "$SNAPSHOT/manifest.json" ] || "$CARGO_TARGET_DIR/release/pipeline" build --recipe datasets/recipes/default.yaml --out "$SNAPSHOT" --force > /dev/null
if ! "$VENV/bin/python" -c "import torch, transformers, peft" 2> /dev/null; then
  echo "installing torch, transformers and peft into $VENV (PyPI; once)"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # the pin is a list of requirements
  "$VENV/bin/pip" install --quiet $TORCH_PIN safetensors
fi
PY=$VENV/bin/python
BIN=$CARGO_TARGET_DIR/release/examples/bench_train
# PyTorch reads the model as a Hugging Face folder: the same weights, exported by rectify in every
# run (seconds), so it is never an older export or another MODEL's.
HF=$OUT/model-hf
rm -rf "$HF" && "$CARGO_TARGET_DIR/release/trainer" export --model "$MODEL" --out "$HF" > /dev/null
VERSIONS=$("$PY" -c "import torch, transformers, peft; print(f'torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, {torch.get_num_threads()} threads')")

"$BIN" --matmul 2048 > "$OUT/matmul.json"
: > "$OUT/results.jsonl"
# One side's steps at length $1; $2: extra bench_train arguments; $3: the PEFT adapter folder for
# PyTorch (empty: full fine-tuning); $4: the results' label.
run_pair() {
  local n=$1 extra=$2 adapter=$3 label=$4
  echo "seq_len $n$label: rectify" >&2
  # shellcheck disable=SC2086 # extra is a list of arguments
  "$BIN" "$MODEL" "$SNAPSHOT" "$n" "$STEPS" --rows-per-step "$ROWS_PER_STEP" --rows-out "$OUT/rows-$n.jsonl" $extra | sed 's/^{/{"engine":"rectify",/' >> "$OUT/results.jsonl"
  echo "seq_len $n$label: PyTorch" >&2
  "$PY" - "$OUT" "$n" "$STEPS" "$HF" "$ROWS_PER_STEP" "$adapter" <<'PY'
import json, sys
out, n, steps, hf, per, adapter = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
# The bench's settings (bench_train.rs): one row per micro-batch, lr 1e-5, AdamW (0.9, 0.95, 1e-8, 0.01), clip 1.0.
args = {"model": hf, "rows": f"{out}/rows-{n}.jsonl", "device": "cpu", "micro": 1, "clip": 1.0, "compile": False,
        "adamw": {"betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01}, "lora_adapter": adapter or None,
        "steps": [{"rows": list(range(k * per, (k + 1) * per)), "lr": 1e-5} for k in range(steps)]}
json.dump(args, open(f"{out}/torch-args-{n}.json", "w"))
PY
  local lora=null
  if [ -n "$adapter" ]; then lora=$LORA_RANK; fi
  "$PY" scripts/gpu_check.py --worker train "$OUT/torch-args-$n.json" | tail -1 | sed "s/^{/{\"engine\":\"pytorch\",\"seq_len\":$n,\"lora_rank\":$lora,/" >> "$OUT/results.jsonl"
}
for n in $LENGTHS; do
  run_pair "$n" "" "" ""
done
for n in $RECOMPUTE_LENGTHS; do
  for blocks in $RECOMPUTE; do
    echo "seq_len $n: rectify with recompute $blocks" >&2
    "$BIN" "$MODEL" "$SNAPSHOT" "$n" "$STEPS" --rows-per-step "$ROWS_PER_STEP" --recompute "$blocks" | sed 's/^{/{"engine":"rectify",/' >> "$OUT/results.jsonl"
  done
done

for n in $LORA_LENGTHS; do
  rm -rf "$OUT/lora-adapter"
  run_pair "$n" "--lora $LORA_RANK --adapter-out $OUT/lora-adapter --recompute all" "$OUT/lora-adapter" " LoRA rank $LORA_RANK"
done

"$PY" - "$OUT" "$THREADS" "$VERSIONS" <<'PY'
import json, sys
out = sys.argv[1]
print(f"rectify: {sys.argv[2]} threads; PyTorch: {sys.argv[3]}")
mm = json.load(open(f"{out}/matmul.json"))
rows = [json.loads(l) for l in open(f"{out}/results.jsonl")]
def torch_tps(r):
    steps = r["steps"][1:] or r["steps"]   # the first step pays for allocation, as on rectify's side
    return sum(s["tokens"] for s in steps) / sum(s["seconds"] for s in steps)
print(f"ceiling: {mm['matmul_n']}^3 f32 matmul at {mm['gflops']:.1f} GFLOP/s")
print(f"{'seq_len':>7} {'engine':>28} {'tokens/s':>9} {'GFLOP/s':>8} {'peak RSS GiB':>12} {'speed':>17} {'memory':>17}  objectives")
torch = {(r["seq_len"], r.get("lora_rank")): r for r in rows if r["engine"] == "pytorch"}
for r in rows:
    n, lora = r["seq_len"], r.get("lora_rank")
    t = torch.get((n, lora))
    tag = f" LoRA r{lora}" if lora else ""
    if r["engine"] == "pytorch":
        tps, gb, name, gf = torch_tps(r), r["peak_rss_mib"] / 1024, "PyTorch eager" + tag, ""
        objs = [s["objective"] for s in r["steps"]]
        ratios = ("", "")
    else:
        tps, gb, gf = r["tokens_per_second"], r["peak_rss_mib"] / 1024, f"{r['gflops']:.1f}"
        name = "rectify" + tag + (f" recompute {r['recompute_blocks']}" if r["recompute_blocks"] else "")
        objs = r["objectives"]
        ratios = (f"{tps / torch_tps(t):.2f}x vs PyTorch", f"{gb * 1024 / t['peak_rss_mib']:.2f}x vs PyTorch") if t else ("", "")
    print(f"{n:>7} {name:>28} {tps:>9.1f} {gf:>8} {gb:>12.2f} {ratios[0]:>17} {ratios[1]:>17}  {' '.join(f'{o:.6f}' for o in objs)}")
PY
