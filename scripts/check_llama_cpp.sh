#!/usr/bin/env bash
# `make check-llama-cpp`: rectify's greedy decoding of a GGUF that llama.cpp's own quantiser made
# from the default model (Q4_K_M unless FTYPE says otherwise) against llama.cpp's greedy decoding
# of the same file and of its F32 dequantisation (scripts/check_llama_cpp.py says how).
#
# llama.cpp comes from PyPI as llama-cpp-python, built from source into a cache venv the first
# time (about 15 minutes on 2 cores). AMX is left out of the build: with it (GGML_NATIVE on these
# Xeons) every llama_decode segfaulted here, and rectify uses no AMX either.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAINER=${TRAINER:-${CARGO_TARGET_DIR:-target}/release/trainer}
VENV=${LLAMA_VENV:-$HOME/.cache/rectify/venv-llama}
OUT=${BENCH_OUT:-bench-out}/llama-cpp
if ! "$VENV/bin/python" -c "import llama_cpp, gguf, numpy" 2> /dev/null; then
  echo "building llama-cpp-python 0.3.36 into $VENV (once; about 15 minutes on 2 cores)"
  python3 -m venv "$VENV"
  CMAKE_ARGS="-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF \
-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON \
-DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
    "$VENV/bin/pip" install --quiet "llama-cpp-python==0.3.36" "gguf==0.19.0" numpy
fi
"$VENV/bin/python" scripts/check_llama_cpp.py --trainer "$TRAINER" --source models/SmolLM2-135M-Instruct.Q4_1.gguf \
  --out "$OUT" --ftype "${FTYPE:-Q4_K_M}" "$@"
