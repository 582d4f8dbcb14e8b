#!/usr/bin/env bash
# `make bench-data`: the full-size recipe (datasets/recipes/full.yaml) end to end and per stage (rows/s, tokens/s, peak memory,
# CPU use), and tokenization against a baseline measured in the same run: Python Hugging Face
# `tokenizers` batch-encoding the same texts with the same tokenizer.json.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$CARGO_TARGET_DIR/release
OUT=${BENCH_OUT:-bench-out}
RECIPE=${RECIPE:-datasets/recipes/full.yaml}
mkdir -p "$OUT"
cargo build --release --workspace --bins --examples
make --no-print-directory model

. scripts/bench_threads.sh

# The baseline's own environment, so the bench never touches the user's Python; the Python
# package of the crate's version (Cargo.lock), installed again when the venv holds another.
VENV=.venv-bench
TOKENIZERS=$(grep -A1 '^name = "tokenizers"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
if ! "$VENV/bin/python" -c "import sys, tokenizers; sys.exit(tokenizers.__version__ != '$TOKENIZERS')" 2> /dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "tokenizers==$TOKENIZERS"
fi

echo "== end to end: pipeline build $RECIPE"
/usr/bin/time -v "$BIN/pipeline" build --recipe "$RECIPE" --out "$OUT/snapshot" --force > "$OUT/build.txt" 2> "$OUT/build.err" || { cat "$OUT/build.err"; exit 1; }
python3 - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
err = open(f"{out}/build.err").read()
field = lambda name: re.search(rf"{re.escape(name)}: (.*)", err).group(1).strip()
wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
parts = [float(p) for p in wall.split(":")]
secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
rss_mb = int(field("Maximum resident set size (kbytes)")) / 1024
m = json.load(open(f"{out}/snapshot/manifest.json"))
timings = json.load(open(f"{out}/snapshot/timings.json"))
rows_in = m["stages"][0]["rows_in"]
summary = {"wall_seconds": secs, "cpu_seconds": cpu, "cores_busy": cpu / secs, "peak_rss_mb": rss_mb,
           "input_rows": rows_in, "rows_per_second": rows_in / secs,
           "packed_tokens": m["packing"]["non_pad_tokens"], "tokens_per_second": m["packing"]["non_pad_tokens"] / secs,
           "packing_efficiency": m["packing"]["efficiency"], "snapshot_id": m["snapshot_id"], "stages": timings}
json.dump(summary, open(f"{out}/end_to_end.json", "w"), indent=1)
print(f"wall {secs:.2f} s, cpu {cpu:.2f} s ({cpu/secs:.2f} cores busy), peak RSS {rss_mb:.0f} MiB, "
      f"{rows_in/secs:,.0f} input rows/s, {summary['tokens_per_second']:,.0f} packed tokens/s, "
      f"packing efficiency {100*m['packing']['efficiency']:.2f}%")
print(f"{'stage':<14} {'seconds':>8} {'rows/s':>12} {'tokens/s':>12}")
for t in timings:
    print(f"{t['stage']:<14} {t['seconds']:>8.3f} {t['rows_per_second']:>12,.0f} {t['tokens_per_second']:>12,.0f}")
PY

echo "== tokenization: Rust (tokenizers crate via rectify) vs Python HF tokenizers, same texts"
"$BIN/examples/bench_tokenize" "$RECIPE" "$OUT" > "$OUT/tokenize_rust.json"
"$VENV/bin/python" scripts/bench_tokenize.py "$OUT/tokenizer.json" "$OUT/texts.jsonl" > "$OUT/tokenize_python.json"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
r = json.load(open(f"{out}/tokenize_rust.json"))
p = json.load(open(f"{out}/tokenize_python.json"))
same = r["ids_sha256"] == p["ids_sha256"]
print(f"{r['texts']} texts, {r['tokens']:,} tokens, {r['threads']} threads; ids identical to Python: {same}")
base = p["python_encode_batch_fast_tokens_per_s"]
print(f"python tokenizers {p['tokenizers_version']} encode_batch_fast : {base:>12,.0f} tokens/s (baseline)")
print(f"rust tokenizers encode_batch_fast        : {r['rust_encode_batch_fast_tokens_per_s']:>12,.0f} tokens/s ({r['rust_encode_batch_fast_tokens_per_s']/base:.2f}x)")
print(f"rust encode_batch_fast, one thread       : {r['rust_single_thread_tokens_per_s']:>12,.0f} tokens/s ({r['rust_single_thread_tokens_per_s']/base:.2f}x)")
print(f"rust template + encode + loss mask       : {r['rust_chat_template_and_mask_tokens_per_s']:>12,.0f} tokens/s ({r['rust_chat_template_and_mask_tokens_per_s']/base:.2f}x)")
print(f"parallel speed-up of encode_batch_fast over one thread: {r['rust_encode_batch_fast_tokens_per_s']/r['rust_single_thread_tokens_per_s']:.2f}x")
if not same:
    sys.exit("FAIL: Rust and Python token ids differ")
PY
