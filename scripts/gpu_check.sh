#!/usr/bin/env bash
# The GPU check (README: "GPU check"): rectify's CUDA path against PyTorch on the same GPU,
# every figure in one run, all of them in OUT/gpu_check.json (each process's log in OUT/logs.tgz)
# and a short table on stdout.
#
#   scripts/gpu_check.sh [--cpu] [--bundle DIR] [--out DIR] [--budget SECONDS] [--work DIR] [--keep]
#                         [--shapes A,B] [--only A,B]
#
# --bundle DIR  what `make gpu-bundle` wrote (trainer.gz and the snapshots), for a GPU machine
#               without cargo. Without it the trainer is $TRAINER or the build folder's and the
#               snapshots are those in $SNAPSHOTS (default snapshots/).
# --cpu         the dry run CI runs: tiny shapes, two steps, the CPU backend; PyTorch optional.
# --out DIR     where the results go (default bench-out/gpu-check); $GPU_CHECK_OUT also works.
# --work DIR    where the check makes gpu-check-work-MODE for models, runs and logs (default
#               bench-out), removed at the end unless --keep.
# --budget S    seconds for the whole check (default 420 on a GPU).
# --shapes A,B  only these shapes (smollm2-135m, qwen2.5-1.5b, and qwen3-1.7b only when named; tiny-llama,
#               tiny-qwen2, tiny-qwen3 with --cpu).
# --only A,B    only these measurements (logprobs, train_rectify, train_eager, generate, heldout, microbatch,
#               train_compile, train_tf32, train_recompute): a second run that fills in what the
#               first one skipped. The environment and the models are always made.
set -euo pipefail
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
need_value() { [ $# -ge 2 ] || { echo "gpu_check.sh: $1 needs a value" >&2; exit 2; }; }
mode=gpu
bundle=""
out="${GPU_CHECK_OUT:-bench-out/gpu-check}"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) mode=cpu; shift ;;
    --bundle) need_value "$@"; bundle=$(abs "$2"); shift 2 ;;
    --out) need_value "$@"; out=$2; shift 2 ;;
    --budget) need_value "$@"; extra+=("$1" "$2"); shift 2 ;;
    --work) need_value "$@"; extra+=("$1" "$(abs "$2")"); shift 2 ;;
    --keep) extra+=(--keep); shift ;;
    --shapes|--only) need_value "$@"; extra+=("$1" "$2"); shift 2 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see the comment at the top of this script)" >&2; exit 2 ;;
  esac
done
# Paths given relative to where the script was called from, then the repository root.
out=$(abs "$out")
# A bare name (TRAINER=trainer) is looked up on PATH, as a shell would run it.
case "${TRAINER:-}" in
  "") ;;
  */*) TRAINER=$(abs "$TRAINER") ;;
  *) found=$(command -v "$TRAINER") || { echo "gpu_check.sh: TRAINER=$TRAINER is not on PATH" >&2; exit 2; }
     TRAINER=$found ;;
esac
[ -z "${SNAPSHOTS:-}" ] || SNAPSHOTS=$(abs "$SNAPSHOTS")
cd "$(dirname "$0")/.."
mkdir -p "$out"
if [ -n "$bundle" ]; then
  snapshots=$bundle/snapshots
  if [ -z "${TRAINER:-}" ]; then
    # Unpacked into the repository (where scripts are known to run), not into /tmp or the results
    # folder (either may be mounted noexec), and removed after.
    mkdir -p bench-out/gpu-check-bin
    TRAINER=$PWD/bench-out/gpu-check-bin/trainer
    if [ -f "$bundle/trainer.gz" ]; then
      gunzip -c "$bundle/trainer.gz" > "$TRAINER"
    else
      cp "$bundle/trainer" "$TRAINER"
    fi
    chmod +x "$TRAINER"
    trap 'rm -rf bench-out/gpu-check-bin' EXIT
  fi
else
  snapshots=${SNAPSHOTS:-snapshots}
  TRAINER=${TRAINER:-${CARGO_TARGET_DIR:-target}/release/trainer}
fi
# The scored default snapshot has the same rows as the unscored one; either will do.
snapshot=$snapshots/default
[ -f "$snapshot/manifest.json" ] || snapshot=$snapshots/default-unscored
for need in "$TRAINER" "$snapshot/manifest.json" "$snapshots/validation/manifest.json" "$snapshots/eval/gsm8k_test/manifest.json"; do
  if [ ! -e "$need" ]; then
    echo "gpu_check.sh: $need is missing (make gpu-bundle, or make build snapshots: see the README's GPU check)" >&2
    exit 2
  fi
done
# The check stops its own measurements and saves on SIGTERM / SIGINT; this shell waits for that
# rather than dying first (a `timeout` signals the whole group).
trap '' TERM INT
"${PYTHON:-python3}" scripts/gpu_check.py --mode "$mode" --trainer "$TRAINER" --snapshot "$snapshot" \
  --heldout "$snapshots/validation" --prompts "$snapshots/eval/gsm8k_test" --out "$out" ${extra[@]+"${extra[@]}"}
