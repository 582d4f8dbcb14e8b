# rectify: `make data` builds the default snapshot, `make test` runs the tests.
SHELL := /bin/bash
CARGO ?= cargo
CARGO_TARGET_DIR ?= target
export CARGO_TARGET_DIR
BIN := $(CARGO_TARGET_DIR)/release
PIPELINE := $(BIN)/pipeline
TRAINER := $(BIN)/trainer
LOSS ?= dft
BACKEND ?= cpu
RUNS ?= runs
MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
SNAPSHOTS ?= snapshots

.PHONY: all build build-cuda gpu-bundle gpu-check gpu-check-cpu model data data-eval score train eval test bench bench-data bench-train bench-generate check-export check-llama-cpp rft probs curves clean

all: data

build:
	$(CARGO) build --release --workspace

# The CUDA backend compiles its kernels with NVRTC at run time, so it builds without a GPU.
build-cuda:
	CUDARC_CUDA_VERSION=13000 $(CARGO) build --release --workspace --features trainer/cuda

# The GPU check (README: GPU check). `gpu-bundle` packs what a GPU machine without cargo needs
# beside the repository: the stripped CUDA trainer, gzipped, and the three snapshots the check
# reads. `gpu-check` runs it here (an NVIDIA machine with cargo); `gpu-check-cpu` is the dry run.
GPU_BUNDLE ?= bench-out/gpu-bundle
GPU_SNAPSHOTS := $(SNAPSHOTS)/default-unscored/manifest.json $(SNAPSHOTS)/validation/manifest.json $(SNAPSHOTS)/eval/gsm8k_test/manifest.json
# The snapshots come first: building a missing one runs the CPU build, which must not be the
# trainer that gets packed.
gpu-bundle: model $(GPU_SNAPSHOTS) build-cuda
	@$(TRAINER) train --help | grep -q 'possible values: cpu, cuda' || { echo "$(TRAINER) is not a CUDA build" >&2; exit 1; }
	rm -rf $(GPU_BUNDLE) && mkdir -p $(GPU_BUNDLE)/snapshots/eval
	strip -o $(GPU_BUNDLE)/trainer $(TRAINER) && gzip -9 -f $(GPU_BUNDLE)/trainer
	cp -r $(SNAPSHOTS)/default-unscored $(SNAPSHOTS)/validation $(GPU_BUNDLE)/snapshots/
	cp -r $(SNAPSHOTS)/eval/gsm8k_test $(GPU_BUNDLE)/snapshots/eval/
	@echo "$(GPU_BUNDLE): $$(du -sh $(GPU_BUNDLE) | cut -f1) (trainer.gz $$(du -h $(GPU_BUNDLE)/trainer.gz | cut -f1)); repository $$(git ls-files -z | du -ch --files0-from=- | tail -1 | cut -f1)"
	@# The device's C library must be at least this (the trainer does not start on an older one).
	@echo "trainer needs glibc $$(objdump -T $(TRAINER) | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 | cut -d_ -f2) or newer"

gpu-check: model $(GPU_SNAPSHOTS) build-cuda
	./scripts/gpu_check.sh

gpu-check-cpu: build model $(GPU_SNAPSHOTS)
	./scripts/gpu_check.sh --cpu --out bench-out/gpu-check-cpu

$(SNAPSHOTS)/eval/gsm8k_test/manifest.json:
	$(MAKE) --no-print-directory build model
	$(PIPELINE) build --recipe datasets/recipes/eval/gsm8k_test.yaml --out $(SNAPSHOTS)/eval/gsm8k_test --force > /dev/null

model: $(MODEL)
$(MODEL):
	./scripts/fetch_model.sh

# The default training snapshot, its held-out rows and the evaluation snapshots (prompt-only).
# The default recipe is built unscored into default-unscored, then `score` writes default/ with
# the reference model's log-probabilities.
data: build model
	$(PIPELINE) build --recipe datasets/recipes/default.yaml --out $(SNAPSHOTS)/default-unscored --force
	$(PIPELINE) build --recipe datasets/recipes/validation.yaml --out $(SNAPSHOTS)/validation --force
	$(MAKE) --no-print-directory data-eval
	$(MAKE) --no-print-directory score
	@echo "default snapshot: $(SNAPSHOTS)/default  (try: $(PIPELINE) inspect $(SNAPSHOTS)/default --row 0)"

# Reference scoring: fill ref_logprobs of the default snapshot with MODEL's log-probability of
# every token (`make score MODEL=path/to/model` for another reference). Run it again after an
# interruption and it resumes where it stopped.
score: build model $(SNAPSHOTS)/default-unscored/manifest.json
	$(TRAINER) score --model $(MODEL) --snapshot $(SNAPSHOTS)/default-unscored --out $(SNAPSHOTS)/default --force

$(SNAPSHOTS)/default-unscored/manifest.json:
	$(MAKE) --no-print-directory build model
	$(PIPELINE) build --recipe datasets/recipes/default.yaml --out $(SNAPSHOTS)/default-unscored --force

# Every recipe in datasets/recipes/eval/ (scripts/eval_snapshots.sh).
data-eval: build model
	PIPELINE=$(PIPELINE) SNAPSHOTS=$(SNAPSHOTS) EVAL_DIR=$(EVAL_SNAPSHOTS) EVAL_TOKENIZER=$(EVAL_TOKENIZER) ./scripts/eval_snapshots.sh all

$(SNAPSHOTS)/default/manifest.json:
	$(MAKE) --no-print-directory score

# The default run's held-out rows (`validation_snapshot` of datasets/recipes/train/default.yaml).
$(SNAPSHOTS)/validation/manifest.json:
	$(MAKE) --no-print-directory build model
	$(PIPELINE) build --recipe datasets/recipes/validation.yaml --out $(SNAPSHOTS)/validation --force

# Fine-tune the default model on the default snapshot (LOSS=dft|sft, BACKEND=cpu|cuda), measuring
# the loss on the held-out snapshot as it goes. Each run starts afresh in $(RUNS)/$(LOSS); use
# `trainer train --resume` to continue one.
# The snapshots come first: building a missing one runs the CPU build, which must not replace a
# CUDA trainer built for BACKEND=cuda.
train: model $(SNAPSHOTS)/default/manifest.json $(SNAPSHOTS)/validation/manifest.json $(if $(filter cuda,$(BACKEND)),build-cuda,build)
	rm -rf $(RUNS)/$(LOSS)
	$(TRAINER) train --recipe datasets/recipes/train/default.yaml --loss $(LOSS) --output-dir $(RUNS)/$(LOSS) --device $(BACKEND) \
	  --snapshot $(SNAPSHOTS)/default --validation-snapshot $(SNAPSHOTS)/validation

# Histogram (PNG + CSV) of the probability each model gives the training tokens of PROBS_ROWS
# rows of the default snapshot: the base model and whichever of the SFT / DFT runs exist.
MODELS ?= $(MODEL) $(wildcard $(RUNS)/dft/final $(RUNS)/sft/final)
PROBS_ROWS ?= 8
PROBS_OUT ?= bench-out/probs.png
probs: build model $(SNAPSHOTS)/default/manifest.json
	$(TRAINER) probs $(foreach m,$(MODELS),--model $(m)) --snapshot $(SNAPSHOTS)/default --rows $(PROBS_ROWS) --out $(PROBS_OUT)

# Training curves of the SFT / DFT runs of `make train` that exist, overlaid (each run also keeps
# its own as runs/LOSS/curves.png).
CURVES_RUNS ?= $(patsubst %/metrics.jsonl,%,$(wildcard $(RUNS)/dft/metrics.jsonl $(RUNS)/sft/metrics.jsonl))
CURVES_OUT ?= bench-out/curves.png
curves: build
	@test -n "$(CURVES_RUNS)" || { echo "no run to draw: make train (LOSS=sft for the SFT run) first" >&2; exit 1; }
	$(TRAINER) curves $(CURVES_RUNS) --out $(CURVES_OUT)

# Evaluate the model from `make train` (runs/$(LOSS)/final), or the base model when there is none,
# on a stated subset that finishes on 2 CPU cores in minutes: the first $(EVAL_LIMIT) prompts of
# each of $(EVAL_BENCH), greedy, at most $(EVAL_MAX_NEW) new tokens. Full runs: see the README.
EVAL_BENCH ?= gsm8k,math500,humaneval,mbpp
EVAL_LIMIT ?= 30
EVAL_MAX_NEW ?= 384
EVAL_MODEL ?= $(if $(wildcard $(RUNS)/$(LOSS)/final/config.json),$(RUNS)/$(LOSS)/final,$(MODEL))
# A model of another family than the default needs prompts in its own tokens:
# `make eval EVAL_MODEL=M EVAL_TOKENIZER=M` builds them into $(SNAPSHOTS)/eval-<M's name> (NAME
# for runs/NAME/final; a trained model is best prompted with its own final/'s template)
# (scripts/eval_snapshots.sh names the folder).
EVAL_TOKENIZER ?=
EVAL_SNAPSHOTS ?= $(SNAPSHOTS)/eval$(if $(EVAL_TOKENIZER),-$(patsubst %.gguf,%,$(notdir $(patsubst %/final,%,$(patsubst %/,%,$(EVAL_TOKENIZER))))))
# Results go to $(RUNS)/eval/NAME: the folder `trainer eval` picks without --out, under $(RUNS).
eval: build model
	@PIPELINE=$(PIPELINE) SNAPSHOTS=$(SNAPSHOTS) EVAL_DIR=$(EVAL_SNAPSHOTS) EVAL_TOKENIZER=$(EVAL_TOKENIZER) ./scripts/eval_snapshots.sh $(EVAL_BENCH) > /dev/null
	$(TRAINER) eval --model $(EVAL_MODEL) --bench $(EVAL_BENCH) --snapshots $(EVAL_SNAPSHOTS) --limit $(EVAL_LIMIT) --max-new-tokens $(EVAL_MAX_NEW) --out $(RUNS)/eval/$(notdir $(patsubst %/final,%,$(EVAL_MODEL)))

# Rejection-sampled offline RL (README: Offline RL): questions from training sources, K samples
# each from the base model, verified, the correct ones selected into a train snapshot, DFT on it
# (LOSS=sft for RFT), then base vs trained on the `make eval` subset. Measured: 10 to 15 minutes on
# 2 cores after `make data` (README: Offline RL).
rft: build model
	MODEL=$(MODEL) LOSS=$(LOSS) EVAL_BENCH=$(EVAL_BENCH) EVAL_LIMIT=$(EVAL_LIMIT) EVAL_MAX_NEW=$(EVAL_MAX_NEW) ./scripts/rft.sh

test: model
	$(CARGO) test --release --workspace

bench: bench-data bench-train bench-generate
bench-data: build model
	./scripts/bench_data.sh

# The exported Hugging Face folder read by an independent numpy forward (reference greedy ids) and
# by transformers itself (log-probabilities equal to rectify's; SKIPPED without torch).
check-export: build model $(SNAPSHOTS)/default-unscored/manifest.json
	SNAPSHOT=$(SNAPSHOTS)/default-unscored ./scripts/check_export.sh

# A GGUF quantised by llama.cpp itself (Q4_K_M) decoded greedily by rectify and by llama.cpp.
check-llama-cpp: build model
	./scripts/check_llama_cpp.sh

bench-train: build model
	./scripts/bench_train.sh

bench-generate: build model
	./scripts/bench_generate.sh

clean:
	rm -rf $(SNAPSHOTS) $(RUNS) bench-out
