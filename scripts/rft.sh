#!/usr/bin/env bash
# `make rft`: rejection-sampled offline RL end to end on 2 CPU cores (README: Offline RL).
#   1. the question snapshot (datasets/recipes/rft/questions.yaml: training sources only),
#   2. K samples per question from the base model, each verified (`trainer sample`),
#   3. the train snapshot of the correct, untruncated samples (datasets/recipes/rft/train.yaml),
#   4. DFT on it from the same model (LOSS=sft: RFT, plain SFT on the same samples),
#   5. the base and the trained model on the subset `make eval` uses, side by side.
# Sampling runs at temperature 0.7, not the paper's 1.0 (`trainer sample`'s default): at 1.0
# SmolLM2-135M answered 3 of 192 samples right (1.6%) and 0 of 128 in a smaller run, too few to
# train on; RFT_TEMPERATURE=1.0 gives the paper's setting.
# Every step is reused when its inputs did not change: the snapshots are deterministic, sampling
# reuses rollouts with the same cache key, and evaluation reuses results of the same model hash,
# settings and snapshot.
set -euo pipefail
BIN=${CARGO_TARGET_DIR:-target}/release
PIPELINE=$BIN/pipeline
TRAINER=$BIN/trainer
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
LOSS=${LOSS:-dft}
RFT_K=${RFT_K:-4}
RFT_TEMPERATURE=${RFT_TEMPERATURE:-0.7}
RFT_TOP_P=${RFT_TOP_P:-1.0}
RFT_MAX_NEW=${RFT_MAX_NEW:-320}
RFT_SEED=${RFT_SEED:-0}
EVAL_BENCH=${EVAL_BENCH:-gsm8k,math500,humaneval,mbpp}
EVAL_LIMIT=${EVAL_LIMIT:-30}
EVAL_MAX_NEW=${EVAL_MAX_NEW:-384}
RUN=runs/rft-$LOSS
# A second round samples from a trained model; step 4 replaces $RUN, so the model must live
# elsewhere.
case "$(realpath -m "$MODEL")/" in
  "$(realpath -m "$RUN")"/*)
    echo "MODEL=$MODEL is inside $RUN, which step 4 replaces: copy it first (cp -r $MODEL runs/round-1) and pass that" >&2
    exit 1 ;;
esac

t_start=$(date +%s)
t_last=$t_start
timings=()
step() { # step NAME: record the seconds since the previous step
  local now; now=$(date +%s)
  timings+=("$(printf '%-22s %5d s' "$1" $((now - t_last)))")
  t_last=$now
}

echo "== 1/5 questions"
$PIPELINE build --recipe datasets/recipes/rft/questions.yaml --out snapshots/rft/questions --force | tail -1
PIPELINE=$PIPELINE SNAPSHOTS=snapshots EVAL_DIR=snapshots/eval EVAL_TOKENIZER= ./scripts/eval_snapshots.sh "$EVAL_BENCH" > /dev/null
step questions

echo "== 2/5 sample K=$RFT_K at temperature $RFT_TEMPERATURE, top-p $RFT_TOP_P, $RFT_MAX_NEW new tokens, seed $RFT_SEED"
# --force: other settings or another model resample (a different cache key is never reused).
$TRAINER sample --model "$MODEL" --prompts snapshots/rft/questions --out snapshots/rft/rollouts --force \
  --samples "$RFT_K" --temperature "$RFT_TEMPERATURE" --top-p "$RFT_TOP_P" --max-new-tokens "$RFT_MAX_NEW" --seed "$RFT_SEED"
$PIPELINE stats snapshots/rft/rollouts | sed -n '/^rollouts of/,$p'
step sample

echo "== 3/5 select"
# A selection that keeps no sample fails the build, naming where the samples went.
if ! $PIPELINE build --recipe datasets/recipes/rft/train.yaml --out snapshots/rft/train --force | sed -n '/^rollouts source/,/dropped/p;$p'; then
  echo "nothing to train on: if no sample was correct, raise the question limits in datasets/recipes/rft/questions.yaml or RFT_K" >&2
  exit 1
fi
step select

echo "== 4/5 train $LOSS"
rm -rf "$RUN"
# From MODEL, the model the samples came from (the recipe names the default one).
$TRAINER train --recipe datasets/recipes/train/rft.yaml --model "$MODEL" --loss "$LOSS" --output-dir "$RUN"
step "train $LOSS"

echo "== 5/5 evaluate: base and $LOSS, first $EVAL_LIMIT prompts of $EVAL_BENCH, greedy, $EVAL_MAX_NEW new tokens"
eval_args=(--bench "$EVAL_BENCH" --snapshots snapshots/eval --limit "$EVAL_LIMIT" --max-new-tokens "$EVAL_MAX_NEW")
$TRAINER eval --model "$MODEL" "${eval_args[@]}" --out runs/eval/rft-base > /dev/null
step "eval base"
$TRAINER eval --model "$RUN/final" "${eval_args[@]}" --out "runs/eval/rft-$LOSS" > /dev/null
step "eval $LOSS"

echo
$TRAINER compare runs/eval/rft-base "runs/eval/rft-$LOSS" --label base --label "rft-$LOSS" --plot "$RUN/compare.png" | tee "$RUN/compare.md"
echo
printf '%s\n' "${timings[@]}"
printf '%-22s %5d s\n' total $(( $(date +%s) - t_start ))
echo "lineage: runs/eval/rft-$LOSS/summary.json -> $RUN/final/training.json -> snapshots/rft/train/manifest.json (rollout_sources) -> snapshots/rft/rollouts/manifest.json (rollouts) -> snapshots/rft/questions/manifest.json (inputs)"
