# rectify: `make data` builds the default snapshot, `make test` runs the tests.
SHELL := /bin/bash
CARGO ?= cargo
CARGO_TARGET_DIR ?= target
export CARGO_TARGET_DIR
BIN := $(CARGO_TARGET_DIR)/release
PIPELINE := $(BIN)/pipeline
MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
SNAPSHOTS ?= snapshots
EVALS := gsm8k_test math500 aime24 amc23 minerva olympiadbench humaneval mbpp_test mbpp_validation

.PHONY: all build model data data-eval test bench bench-data clean

all: data

build:
	$(CARGO) build --release --workspace

model: $(MODEL)
$(MODEL):
	./scripts/fetch_model.sh

# The default training snapshot plus the evaluation snapshots (prompt-only).
data: build model
	$(PIPELINE) build --recipe datasets/recipes/default.yaml --out $(SNAPSHOTS)/default --force
	$(MAKE) --no-print-directory data-eval
	@echo "default snapshot: $(SNAPSHOTS)/default  (try: $(PIPELINE) inspect $(SNAPSHOTS)/default --row 0)"

data-eval: build model
	@for b in $(EVALS); do \
	  $(PIPELINE) build --recipe datasets/recipes/eval/$$b.yaml --out $(SNAPSHOTS)/eval/$$b --force > /dev/null || exit 1; \
	  echo "eval snapshot: $(SNAPSHOTS)/eval/$$b"; \
	done

test: model
	$(CARGO) test --release --workspace

bench: bench-data
bench-data: build model
	./scripts/bench_data.sh

clean:
	rm -rf $(SNAPSHOTS) bench-out
