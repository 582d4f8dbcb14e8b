#!/usr/bin/env bash
# `make bench-generate`: generation speed of SmolLM2-135M on this machine's cores, rectify against
# llama.cpp measured in the same run on the same GGUF (README: Generation speed).
#
# - rectify: `bench_generate` (eval/examples), the host decoder `trainer eval` and `trainer sample`
#   use on CPU, greedy, every sequence exactly NEW_TOKENS new tokens, on GSM8K test prompts;
#   BENCH_BURN=1 adds Burn's CPU backend (the GPU path).
# - llama.cpp: `llama-batched-bench`, built from the llama.cpp sources that llama-cpp-python
#   0.3.36 vendors (PyPI), with cmake from PyPI, into a cache folder outside the repo (once, about
#   10 minutes on 2 cores; again when the version or the flags change: a stamp file records
#   them). It makes its own prompts, so each batch size runs with the mean prompt length of
#   rectify's prompts at that size, and `-ntg NEW_TOKENS-1` decoding steps after the prompt, as
#   rectify's NEW_TOKENS tokens are the prompt pass's one plus NEW_TOKENS-1 steps. The AVX-512
#   flags follow this CPU (/proc/cpuinfo); AMX is left out (see scripts/check_llama_cpp.sh).
# - both sides on THREADS threads (default: the cores this process may run on), printed.
# - the two ceilings, from figures measured in the same run: weight bytes per step over memory
#   bandwidth (in rectify's layout and as the file stores them), and FLOPs per token over matmul
#   GFLOP/s.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${BENCH_OUT:-bench-out}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
NEW_TOKENS=${NEW_TOKENS:-64}
BATCHES=${BATCHES:-1,8,16,32,64}
. scripts/bench_threads.sh
LLAMA_VERSION=0.3.36
LLAMA_DIR=${LLAMA_CPP_DIR:-$HOME/.cache/rectify/llama-cpp-$LLAMA_VERSION}
BATCHED=$LLAMA_DIR/build/bin/llama-batched-bench
mkdir -p "$OUT"
cargo build --release --workspace --examples
make --no-print-directory model
[ -f snapshots/eval/gsm8k_test/manifest.json ] ||
  "$CARGO_TARGET_DIR/release/pipeline" build --recipe datasets/recipes/eval/gsm8k_test.yaml --out snapshots/eval/gsm8k_test --force > /dev/null

# GGML_NATIVE=OFF with each extension named: the AVX-512 ones only where this CPU has them (a
# binary built with them dies on an illegal instruction elsewhere).
has() { grep -qw "$1" /proc/cpuinfo && echo ON || echo OFF; }
LLAMA_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VNNI=$(has avx512_vnni) -DGGML_AVX512_VBMI=$(has avx512vbmi) \
-DGGML_AVX512_BF16=$(has avx512_bf16) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
STAMP="llama-cpp-python $LLAMA_VERSION $LLAMA_FLAGS"
if [ ! -x "$BATCHED" ] || [ "$(cat "$LLAMA_DIR/stamp" 2> /dev/null)" != "$STAMP" ]; then
  echo "building llama.cpp's llama-batched-bench from llama-cpp-python $LLAMA_VERSION's sources into $LLAMA_DIR (once; about 10 minutes)"
  rm -rf "$LLAMA_DIR" && mkdir -p "$LLAMA_DIR"
  python3 -m venv "$LLAMA_DIR/venv"
  "$LLAMA_DIR/venv/bin/pip" install --quiet cmake ninja
  # The sdist only: `--no-binary :all:` would also build its build tools (cmake) from source.
  "$LLAMA_DIR/venv/bin/pip" download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_VERSION" -d "$LLAMA_DIR/sdist"
  tar -xzf "$LLAMA_DIR"/sdist/llama_cpp_python-$LLAMA_VERSION.tar.gz -C "$LLAMA_DIR"
  SRC=$LLAMA_DIR/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp
  PATH=$LLAMA_DIR/venv/bin:$PATH cmake -S "$SRC" -B "$LLAMA_DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=OFF \
    $LLAMA_FLAGS > "$LLAMA_DIR/cmake.log"
  PATH=$LLAMA_DIR/venv/bin:$PATH cmake --build "$LLAMA_DIR/build" --target llama-batched-bench -j "$THREADS" > "$LLAMA_DIR/build.log"
  echo "$STAMP" > "$LLAMA_DIR/stamp"
fi

echo "rectify: host decoder, batches $BATCHES, $NEW_TOKENS new tokens each, $THREADS threads"
"$CARGO_TARGET_DIR/release/examples/bench_generate" "$MODEL" snapshots/eval/gsm8k_test "$NEW_TOKENS" "$BATCHES" > "$OUT/generate.jsonl"
: > "$OUT/llama-batched-bench.txt"
: > "$OUT/llama-batched-bench.log"
# One llama.cpp run per batch size, at that batch's mean prompt length on rectify's side.
python3 -c "
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r.get('engine') == 'host':
        print(r['batch'], round(r['mean_prompt_tokens']))" "$OUT/generate.jsonl" |
  while read -r batch prompt; do
    echo "llama.cpp: llama-batched-bench, batch $batch, $THREADS threads, $prompt-token prompts (rectify's mean at this batch), $((NEW_TOKENS - 1)) decoding steps"
    "$BATCHED" -m "$MODEL" -c $((batch * (prompt + NEW_TOKENS) + 256)) -b 2048 -ub 512 -npp "$prompt" -ntg $((NEW_TOKENS - 1)) -npl "$batch" \
      -t "$THREADS" -tb "$THREADS" >> "$OUT/llama-batched-bench.txt" 2>> "$OUT/llama-batched-bench.log" < /dev/null
  done

python3 - "$OUT/generate.jsonl" "$OUT/llama-batched-bench.txt" "$OUT/generate-summary.json" "$THREADS" "$STAMP" <<'PY'
import json, re, sys
threads, stamp = int(sys.argv[4]), sys.argv[5]
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ceil = next(r for r in rows if r.get("kind") == "ceilings")
runs = [r for r in rows if r.get("kind") != "ceilings"]
llama = {}
for line in open(sys.argv[2]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) >= 10 and cells[0].isdigit():
        pp, tg, b = int(cells[0]), int(cells[1]), int(cells[2])
        t_pp, t_tg, t = float(cells[4]), float(cells[6]), float(cells[8])
        # The prompt pass yields each sequence's first token, as on rectify's side: tg + 1 new
        # tokens per sequence, tg of them from decoding steps.
        llama[b] = {"batch": b, "prompt_tokens": pp, "new_tokens": (tg + 1) * b, "seconds": t,
                    "tokens_per_second": (tg + 1) * b / t, "decode_tokens_per_second": float(cells[7]),
                    "prefill_tokens_per_second": float(cells[5])}
print(f"\n{threads} threads each")
print(f"{'engine':>10} {'batch':>6} {'prompt':>7} {'tok/s (prompts incl.)':>22} {'decode tok/s':>13} {'vs llama.cpp':>13} {'decode vs llama.cpp':>20}")
summary = {"threads": threads, "llama_cpp_build": stamp, "ceilings": ceil, "rectify": runs, "llama_cpp": list(llama.values())}
for r in runs:
    l = llama.get(r["batch"]) if r["engine"] == "host" else None
    ratio = f"{r['tokens_per_second'] / l['tokens_per_second']:.2f}x" if l else ""
    decode = f"{r['decode_tokens_per_second'] / l['decode_tokens_per_second']:.2f}x" if l else ""
    print(f"{'rectify':>10} {r['batch']:>6} {r['mean_prompt_tokens']:>7.1f} {r['tokens_per_second']:>22.1f} {r['decode_tokens_per_second']:>13.1f}"
          f" {ratio:>13} {decode:>20}" + ("" if r["engine"] == "host" else f"  ({r['engine']})"))
for b, l in sorted(llama.items()):
    print(f"{'llama.cpp':>10} {b:>6} {l['prompt_tokens']:>7} {l['tokens_per_second']:>22.1f} {l['decode_tokens_per_second']:>13.1f}")
host = [r for r in runs if r["engine"] == "host"]
best = max(host, key=lambda r: r["tokens_per_second"])
print(f"best rectify batch: {best['batch']} ({best['tokens_per_second']:.1f} tok/s)")
file = (f" ({ceil['file_weight_bytes'] / 1e6:.0f} MB as the GGUF stores them, llama.cpp's: {ceil['file_batch1_tokens_per_second']:.1f} tok/s)"
        if ceil.get("file_weight_bytes") else "")
print(f"ceilings: batch 1 <= {ceil['bandwidth_gb_per_s']:.1f} GB/s / {ceil['weight_bytes'] / 1e6:.0f} MB of weights in rectify's layout per step"
      f" = {ceil['batch1_tokens_per_second']:.1f} tok/s{file};"
      f" compute <= {ceil['matmul_gflops']:.0f} GFLOP/s / {ceil['flops_per_token'] / 1e6:.0f} MFLOP per token"
      f" = {ceil['compute_tokens_per_second']:.0f} tok/s")
json.dump(summary, open(sys.argv[3], "w"), indent=1)
print(f"(GSM8K test prompts for rectify, synthetic prompts of the same mean length for llama.cpp at each batch size; greedy;"
      f" the prompt pass included in 'prompts incl.', excluded from 'decode'; figures in {sys.argv[3]})")
PY
