#!/usr/bin/env bash
# Builds the evaluation snapshots that a benchmark list needs (`make eval`, `make data-eval`,
# `make rft`): eval_snapshots.sh gsm8k,math500 or eval_snapshots.sh all.
# A benchmark name is a recipe in datasets/recipes/eval/, or that name without its `_test` split
# (gsm8k, mbpp); a path (with a `/`), or a name with a snapshot under $EVAL_DIR/ but no
# recipe, is left as it is: the rule `trainer eval --bench` reads names with. Each build takes under a
# second and the pipeline is deterministic, so a snapshot is always rebuilt (--force) rather than
# trusted to match the current recipe and code.
# The recipes tokenize with the default model's tokenizer. For a model of another family,
# EVAL_TOKENIZER=MODEL (a GGUF file or a Hugging Face folder) builds them with its tokenizer and
# chat template instead (`pipeline build --tokenizer`), into EVAL_DIR (default
# $SNAPSHOTS/eval-<MODEL's name>, so the default model's snapshots in $SNAPSHOTS/eval stay; the
# name of runs/NAME/final is NAME).
set -euo pipefail
PIPELINE=${PIPELINE:-${CARGO_TARGET_DIR:-target}/release/pipeline}
SNAPSHOTS=${SNAPSHOTS:-snapshots}
EVAL_TOKENIZER=${EVAL_TOKENIZER:-}
if [ -n "$EVAL_TOKENIZER" ]; then
  # A trained runs/NAME/final is named NAME, as `make eval` names its results folder.
  name=${EVAL_TOKENIZER%/}; name=$(basename "${name%/final}"); name=${name%.gguf}
  EVAL_DIR=${EVAL_DIR:-$SNAPSHOTS/eval-$name}
else
  EVAL_DIR=${EVAL_DIR:-$SNAPSHOTS/eval}
fi
RECIPES=datasets/recipes/eval
[ $# -eq 1 ] || { echo "usage: $0 BENCH[,BENCH...] | all" >&2; exit 2; }

all=$(cd "$RECIPES" && ls -- *.yaml | sed 's/\.yaml$//')
if [ "$1" = all ]; then names=$all; else
  case ",$1," in
    *,,* | *" "*) echo "benchmarks are comma-separated names without spaces or empty entries, not \`$1\`" >&2; exit 1 ;;
  esac
  names=$(tr ',' ' ' <<< "$1")
fi
for b in $names; do
  case "$b" in */*) # a snapshot folder given as a path is read as it is
    [ -f "$b/manifest.json" ] || { echo "$b: not a snapshot folder (no manifest.json there)" >&2; exit 1; }
    continue ;;
  esac
  # The order `trainer eval` looks in: the name's own folder before its `_test` split.
  if [ -f "$RECIPES/$b.yaml" ]; then s=$b
  elif [ -f "$EVAL_DIR/$b/manifest.json" ]; then continue # a snapshot of the user's own, no recipe here
  elif [ -f "$RECIPES/${b}_test.yaml" ]; then s=${b}_test
  elif [ -f "$EVAL_DIR/${b}_test/manifest.json" ]; then continue # the user's own `_test` split
  else
    echo "no evaluation recipe for benchmark \`$b\`: expected $RECIPES/$b.yaml or $RECIPES/${b}_test.yaml (have: $(echo $all))" >&2
    exit 1
  fi
  "$PIPELINE" build --recipe "$RECIPES/$s.yaml" --out "$EVAL_DIR/$s" --force ${EVAL_TOKENIZER:+--tokenizer "$EVAL_TOKENIZER"} > /dev/null
  echo "eval snapshot: $EVAL_DIR/$s"
done
