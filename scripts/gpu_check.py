#!/usr/bin/env python3
"""The GPU check: rectify's CUDA path measured in one run, against PyTorch on the same GPU.

Run through scripts/gpu_check.sh (see the README's GPU section). On a GPU machine (`--mode gpu`)
it makes two random-weight Hugging Face checkpoints with transformers (a SmolLM2-135M-shaped
Llama and a Qwen2.5-1.5B-shaped Qwen2), then for each shape:

  logprobs        rectify's per-token log-probabilities of packed snapshot rows against PyTorch
                  running every example alone, in float32
  train_rectify   N DFT steps on the default snapshot's 2048-token rows: tokens/s, MFU, peak GPU
                  memory, time to the first step
  train_eager     the same steps, same rows, same learning rates in PyTorch eager (IEEE float32 on
                  both sides: rectify's CUDA matmuls use TF32 only with RECTIFY_TF32=1)
  generate        batched greedy decoding tokens/s against transformers' `generate`
  heldout         the trainer's held-out loss (`validation_snapshot`) against PyTorch's token
                  means over the same rows (first shape only)
  microbatch      the largest micro-batch rectify trains without failing
  train_compile   the PyTorch steps again under torch.compile
  train_tf32      the training steps again with TF32 allowed on both sides (GPU only, optional)
  train_recompute rectify's first steps again with every block recomputed (optional)

Every measurement runs in its own process, so a CUDA failure (NVRTC missing, a kernel that does
not compile, out of memory) is recorded with its message and the step it happened in, and the
check goes on with the next one. Results go to OUT/gpu_check.json after every step, and every
process's log into OUT/logs.tgz, so a run cut short (or killed: SIGTERM is caught) keeps what it
measured; OUT holds those two files only. The models and runs go to a work folder outside OUT.
`--mode cpu` is the dry run CI uses: tiny shapes, two steps, Burn's
Flex backend, PyTorch on CPU when it is installed (skipped with a message when it is not).

The PyTorch side also runs here as worker processes: `gpu_check.py --worker TASK ARGS.json`.
"""

import argparse
import glob
import json
import math
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import threading
import time

def init_std(hidden):
    """The random weights' standard deviation, 2/sqrt(hidden): logits then spread with a standard
    deviation near 2, so log-probabilities differ from token to token. With transformers' default
    0.02 the outputs are nearly uniform and a broken attention would still agree to 1e-3."""
    return 2.0 / math.sqrt(hidden)


def randomize_norms_and_biases(torch, model):
    """Norm weights U(0.5, 1.5) and biases N(0, 0.5) instead of transformers' ones and zeros, so
    that a norm weight or a bias applied wrongly shows too."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.5)


# Architectures measured, with weights drawn as `init_std` and `randomize_norms_and_biases` say.
SHAPES = {
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0, rms_norm_eps=1e-5,
                         max_position_embeddings=8192, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(model_type="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6,
                         max_position_embeddings=32768, tie_word_embeddings=True),
    # Run only when named (`--shapes qwen3-1.7b`), on a second GPU session: a first run's 7
    # minutes are spent on the two above.
    "qwen3-1.7b": dict(model_type="qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, rope_theta=1000000.0, rms_norm_eps=1e-6,
                       max_position_embeddings=40960, tie_word_embeddings=True),
    # Dry-run shapes: the same two architectures and Qwen3, small enough for two CPU cores. The
    # Qwen2 one has a larger vocabulary than the snapshot's tokenizer, as the real one does.
    "tiny-llama": dict(model_type="llama", vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, rope_theta=100000.0, rms_norm_eps=1e-5,
                       max_position_embeddings=8192, tie_word_embeddings=True),
    "tiny-qwen2": dict(model_type="qwen2", vocab_size=50000, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=1, rope_theta=1000000.0, rms_norm_eps=1e-6,
                       max_position_embeddings=32768, tie_word_embeddings=False),
    # Qwen3: q/k norms, and heads twice as wide as hidden_size / heads (as Qwen3-0.6B's are).
    "tiny-qwen3": dict(model_type="qwen3", vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=1000000.0, rms_norm_eps=1e-6,
                       max_position_embeddings=8192, tie_word_embeddings=True),
}

# Per architecture: transformers' model class (config.json's `architectures`) and config class.
ARCHITECTURES = {"llama": ("LlamaForCausalLM", "LlamaConfig"), "qwen2": ("Qwen2ForCausalLM", "Qwen2Config"),
                 "qwen3": ("Qwen3ForCausalLM", "Qwen3Config")}

# Per mode: the shapes, DFT steps, rows scored for the log-probability check, generation batches
# and new tokens, the micro-batch sizes tried per shape (one step each; sized so the largest
# tried is past what an H200 holds), the time budget, and each kind of process's time limit.
# The GPU budget is 7 minutes, as the check must run in well under 8 (issue 9), and leaves room
# within `timeout 480` (README) for the report and the logs; what does not fit is skipped, last
# steps first (see the order in `run_all`).
MODES = {
    "gpu": dict(device="cuda", shapes=["smollm2-135m", "qwen2.5-1.5b"], more_shapes=["qwen3-1.7b"], steps=10, logprob_rows=2,
                gen_batches=[64, 256], gen_new_tokens=128,
                microbatches={"smollm2-135m": [4, 16, 32, 64], "qwen2.5-1.5b": [2, 4, 8, 16], "qwen3-1.7b": [2, 4, 8, 16]}, budget=420,
                limits=dict(checkpoint=150, logprobs=90, heldout=90, train=150, torch_train=150, generate=120, microbatch=60, compile=150,
                            microbatch_search=75)),
    "cpu": dict(device="cpu", shapes=["tiny-llama", "tiny-qwen2", "tiny-qwen3"], steps=2, logprob_rows=2, gen_batches=[2, 4],
                gen_new_tokens=8, microbatches={"tiny-llama": [2], "tiny-qwen2": [2], "tiny-qwen3": [2]}, budget=900,
                limits=dict(checkpoint=120, logprobs=120, heldout=300, train=300, torch_train=300, generate=300, microbatch=150, compile=300,
                            microbatch_search=300)),
}

# Per-token log-probabilities of rectify and PyTorch (both float32) must agree to this, in nats.
LOGPROB_TOLERANCE = 2e-3
# The training comparison: per-step DFT objective and gradient norm, relative.
TRAIN_TOLERANCE = 1e-2
# The held-out loss against PyTorch's, relative: token means over every target token of the
# held-out snapshot, where per-token float32 differences (LOGPROB_TOLERANCE at most) mostly cancel.
# The probability-weighted means (mean probability, DFT objective) rest on few tokens on random
# weights, hence 1e-3 rather than less; the CPU dry run gives 2e-7. A wrong mask or row shows as
# a different token count, compared exactly.
HELDOUT_TOLERANCE = 1e-3
# The training recipes' seed (data order and, with LoRA, the adapters' starting draw).
RECIPE_SEED = 42
# train_lora's adapters: rank 16 on every projection, as datasets/recipes/train/lora.yaml.
LORA = {"rank": 16, "alpha": 32, "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}

# Dense peak throughput by GPU, FLOP/s: FP32 on the CUDA cores and TF32 on the tensor cores
# (NVIDIA's H100, H200 and A100 datasheets, the sparsity figures halved). Both sides run IEEE f32
# except in train_tf32 (rectify: RECTIFY_TF32=1, vendor/README.md). The first name that
# `nvidia-smi` reports a part of wins, so the PCIe and NVL cards (lower clocks and power) come
# before the SXM ones ("NVIDIA H100 80GB HBM3", "NVIDIA H200").
GPU_PEAKS = [
    ("H200 NVL", {"fp32": 60e12, "tf32_tensor": 417.5e12}),
    ("H100 NVL", {"fp32": 60e12, "tf32_tensor": 417.5e12}),
    ("H100 PCIe", {"fp32": 51e12, "tf32_tensor": 378e12}),
    ("H200", {"fp32": 66.9e12, "tf32_tensor": 494.7e12}),
    ("H100", {"fp32": 66.9e12, "tf32_tensor": 494.7e12}),
    ("A100", {"fp32": 19.5e12, "tf32_tensor": 156e12}),
]

# The training FLOPs per token that MFU divides by (see `flops_per_token`).
FLOPS_FORMULA = ("6*N + 12*L*d*S: N weights of every matrix product (output projection once), L layers, "
                 "d = heads*head_dim, S the token-weighted mean length of a packed example")

SEQ_LEN_NOTE = "rows of the default snapshot (2048 tokens, several packed examples each)"

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- the harness


class Check:
    def __init__(self, args):
        # Absolute, since the trainer runs in a folder of its own (see `trainer_cwd`).
        args.trainer = os.path.abspath(shutil.which(args.trainer) or args.trainer)
        for name in ("snapshot", "heldout", "prompts"):
            setattr(args, name, os.path.abspath(getattr(args, name)))
        self.args = args
        self.mode = MODES[args.mode]
        self.device = self.mode["device"]
        self.shapes = list(dict.fromkeys(args.shapes.split(","))) if args.shapes else self.mode["shapes"]
        self.only = list(dict.fromkeys(args.only.split(","))) if args.only else None
        if self.only and "train_rectify" not in self.only and set(self.only) & set(PAIRED_WITH_TRAIN):
            # What these compare with, and the kernels they load, come from the training run.
            self.only.insert(0, "train_rectify")
            print(f"--only: train_rectify added: {', '.join(sorted(set(self.only) & set(PAIRED_WITH_TRAIN)))} "
                  "compare with its steps and load the kernels it compiled", flush=True)
        self.out = os.path.abspath(args.out)
        # Outside OUT, so that OUT carries the results only (a GPU loan returns a few files). The
        # check's own folder inside --work, never --work itself, since it is emptied at the start
        # (no log or model of an earlier run taken for this run's) and removed at the end.
        self.work = os.path.join(os.path.abspath(args.work or os.path.join(REPO, "bench-out")), f"gpu-check-work-{args.mode}")
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.out, exist_ok=True)
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs)
        # cubecl compiles every kernel with NVRTC in each process; it keeps the PTX across
        # processes only when a cubecl.toml in the working folder (or above) names a cache, made
        # here on first use. Each shape's training run starts with an empty cache of its own, so
        # its time to the first step is what a user's first run pays, and the micro-batch search
        # of that shape then loads what it compiled. Scoring and generation share one cache;
        # TF32 kernels get their own.
        self.ptx = {}
        self.child = None
        self.t0 = time.time()
        self.deadline = self.t0 + (args.budget or self.mode["budget"])
        self.results = {"mode": args.mode, "device": self.device, "started_unix": int(self.t0), "only": self.only, "steps": [],
                        "shapes": {},
                        "tolerances": {"logprob_abs_nats": LOGPROB_TOLERANCE, "train_rel": TRAIN_TOLERANCE,
                                       "heldout_rel": HELDOUT_TOLERANCE}}
        self.failed = []

    def trainer_cwd(self, kind):
        """The folder a trainer process runs in, whose cubecl.toml names the PTX cache `kind`."""
        if kind not in self.ptx:
            d = os.path.join(self.work, f"cubecl-{kind}")
            os.makedirs(d)
            with open(os.path.join(d, "cubecl.toml"), "w") as f:
                f.write(f"[compilation]\ncache = {{ file = {json.dumps(os.path.join(d, 'ptx'))} }}\n")
            self.ptx[kind] = d
        return self.ptx[kind]

    # -- bookkeeping

    def save(self):
        # A SIGTERM arriving mid-save would run the handler's own save over these half-written
        # files; it waits until this one is done.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            self.write_results()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def write_results(self):
        path = os.path.join(self.out, "gpu_check.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
        logs = os.path.join(self.out, "logs.tgz")
        with tarfile.open(logs + ".tmp", "w:gz") as t:
            t.add(self.logs, arcname="logs")
        os.replace(logs + ".tmp", logs)

    def left(self):
        return self.deadline - time.time()


    def shape(self, name):
        return self.results["shapes"].setdefault(name, {})

    def step(self, name, fn, *a, min_seconds=10, required=True):
        """Run one measurement; an exception or a failed process is recorded, not raised."""
        if self.only is not None and name.split()[0] in STEP_KINDS and name.split()[0] not in self.only:
            return None  # not asked for (--only): no record at all
        rec = {"step": name, "started_s": round(time.time() - self.t0, 1)}
        if self.left() < min_seconds:
            rec.update(ok=False, skipped=f"out of time: {self.left():.0f} s of the budget left, the step needs {min_seconds}")
            print(f"[{name}] SKIPPED: {rec['skipped']}", flush=True)
        else:
            print(f"[{name}] ...", flush=True)
            t = time.time()
            try:
                rec["result"] = fn(*a)
                rec["ok"] = True
                if isinstance(rec["result"], dict) and rec["result"].get("crashed"):
                    # Steps done before a crash are kept (in the result), and the step fails.
                    rec.update(ok=False, error=rec["result"]["stopped"])
            except Skip as e:
                rec.update(ok=False, skipped=str(e))
            except Failure as e:
                rec.update(ok=False, **({"skipped": str(e)} if e.deadline else {"error": str(e)}))
            except Exception as e:  # a bug in this script: record it and go on
                rec.update(ok=False, error=f"{type(e).__name__}: {e}")
            rec["seconds"] = round(time.time() - t, 2)
            status = "ok" if rec["ok"] else ("SKIPPED: " + rec["skipped"] if "skipped" in rec else "FAILED: " + rec["error"])
            print(f"[{name}] {status} ({rec['seconds']} s)", flush=True)
        if not rec["ok"] and "error" in rec and required:
            self.failed.append(name)
        self.results["steps"].append(rec)
        self.save()
        return rec.get("result")

    # -- processes

    def run(self, name, cmd, timeout, metrics=None, env=None, cwd=None):
        """Run `cmd`, polling its peak memory (GPU: nvidia-smi; CPU: VmHWM) and, when given, the
        time its `metrics` file gets its first line. Raises Failure with the end of stderr."""
        cut = self.left() < timeout  # the check's deadline, not the process's own limit, decides
        timeout = max(1.0, min(timeout, self.left()))
        log = os.path.join(self.logs, name + ".log")
        with open(log, "w") as err:
            t = time.time()
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env or self.env, start_new_session=True,
                                 cwd=cwd)
            self.child = p
            mon = Monitor(p.pid, self.device, metrics, t)
            try:
                out, _ = p.communicate(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                kill_group(p)
                try:
                    out, _ = p.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    # A grandchild in a session of its own (a compiler's worker) holds the pipe.
                    out = ""
                timed_out = True
            finally:
                self.child = None
                mon.stop()
                # What the step has recorded so far survives a hard kill of the whole check.
                self.save()
        seconds = time.time() - t
        res = {"seconds": round(seconds, 2), "peak_memory_mib": mon.peak_mib(), "memory_source": mon.source}
        if mon.first_line_s is not None:
            res["first_metrics_line_s"] = round(mon.first_line_s, 2)
        if timed_out:
            why = "the check's time budget ran out" if cut else "its time limit passed"
            raise Failure(f"{name}: killed after {timeout:.0f} s ({why}); stderr tail: {tail(log)}", res, out, deadline=cut,
                          timed_out=True)
        if p.returncode != 0:
            raise Failure(f"{name}: exit {p.returncode}: {tail(log)}", res, out)
        return res, out

    def worker(self, name, task, params, timeout):
        """A PyTorch measurement in its own process; its result is the last stdout line."""
        if not self.torch:
            raise Skip(self.torch_missing)
        path = os.path.join(self.work, name + ".args.json")
        with open(path, "w") as f:
            json.dump(params, f)
        # PyTorch gets the environment as it was: the trainer's library path could shadow the
        # CUDA libraries its own wheels bring.
        # No hub: the models are local folders, and a DNS stall must not eat the budget.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        try:
            res, out = self.run(name, [sys.executable, os.path.abspath(__file__), "--worker", task, path], timeout, env=env)
        except Failure as e:
            # A training worker prints each step as it ends: those done before a failure or a
            # time-out still count, and say so (as rectify's do, from its metrics file).
            done = [json.loads(l) for l in e.out.splitlines() if l.startswith('{"partial_step"')]
            if not done:
                raise
            return {"steps": [d["partial_step"] for d in done], "stopped": str(e), "crashed": not e.timed_out, "process": e.res,
                    "time_to_first_step_s": done[0]["first_step_done_s"]}
        lines = [l for l in out.splitlines() if l.strip() and not l.startswith('{"partial_step"')]
        if not lines:
            raise Failure(f"{name}: the worker printed no result")
        r = json.loads(lines[-1])
        r["process"] = res
        return r

    # -- the measurements

    def environment(self):
        env = dict(os.environ)
        # IEEE f32 unless a step asks for TF32 itself (train_tf32), whatever the caller exported.
        env.pop("RECTIFY_TF32", None)
        found = {}
        if self.device == "cuda":
            found = cuda_libraries(env, self.work, driver_cuda_version())
        self.env = env
        info = {"python": sys.version.split()[0], "cpu_cores": os.cpu_count(), "cuda_libraries": found,
                "trainer": self.args.trainer, "snapshot": self.args.snapshot, "heldout": self.args.heldout,
                "prompts": self.args.prompts}
        v = subprocess.run([self.args.trainer, "--version"], capture_output=True, text=True, env=env, timeout=30)
        info["trainer_version"] = v.stdout.strip() or v.stderr.strip()
        # A trainer built without the cuda feature would fail every step below, one by one.
        h = subprocess.run([self.args.trainer, "train", "--help"], capture_output=True, text=True, env=env, timeout=30)
        if h.returncode != 0:
            self.results["env"] = info
            raise Failure(f"{self.args.trainer} train --help: exit {h.returncode}: {h.stderr.strip()[-500:]}")
        devices = h.stdout.split("--device", 1)[-1].split("possible values:", 1)[-1].split("]", 1)[0]
        info["trainer_devices"] = [d.strip() for d in devices.split(",") if d.strip()]
        if self.device not in info["trainer_devices"]:
            self.results["env"] = info
            raise Failure(f"{self.args.trainer} is built without --device {self.device} (it has {info['trainer_devices']}): "
                          "make gpu-bundle builds the CUDA trainer")
        probe = subprocess.run([sys.executable, "-c", "import torch, transformers; print(torch.__version__, transformers.__version__)"],
                               capture_output=True, text=True, timeout=120)
        self.torch = probe.returncode == 0 and len(probe.stdout.split()) >= 2
        if self.torch:
            info["torch"], info["transformers"] = probe.stdout.split()[-2:]
        else:
            self.torch_missing = "PyTorch/transformers not importable here: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
            info["torch"] = None
            print(f"SKIPPED (PyTorch parts): {self.torch_missing}", flush=True)
            if self.device == "cuda":
                self.failed.append("torch")
        if self.device == "cuda":
            info["gpu"] = nvidia_smi("--query-gpu=name,driver_version,memory.total", "--format=csv,noheader").strip() or None
            info["peak_flops"] = next(({"name": f"{k} (datasheet, dense)", **v} for k, v in GPU_PEAKS if k in (info["gpu"] or "")),
                                      None)
        else:
            info["gpu"], info["peak_flops"] = None, None
        self.peaks = info["peak_flops"]
        self.results["env"] = info
        # The rows every framework trains on, and the segment lengths for the FLOPs formula.
        rows = os.path.join(self.work, "rows.jsonl")
        self.run("rows", [self.args.trainer, "rows", "--snapshot", self.args.snapshot, "--out", rows], 120)
        self.rows_file = rows
        seg = []
        self.rows_count = 0
        for line in open(rows):
            seg += [n for _, n in segments(json.loads(line)["segment_ids"])]
            self.rows_count += 1
        # Token-weighted mean length of a packed example: the mean span attention works over.
        self.attn_span = sum(n * n for n in seg) / max(1, sum(seg))
        info["rows"] = self.rows_count
        info["ptx_cache"] = ("each shape's training run starts with an empty PTX cache (cubecl.toml in its working folder) and "
                             "compiles every kernel; that shape's micro-batch runs load them from it; scoring and generation "
                             "share one cache, TF32 runs another")
        info["mean_attention_span"] = round(self.attn_span, 1)
        return info

    def checkpoint(self, shape):
        cfg = SHAPES[shape]
        path = os.path.join(self.work, "models", shape)
        if self.torch:
            r = self.worker(f"checkpoint-{shape}", "checkpoint", {"config": cfg, "path": path, "device": self.device, "seed": 1},
                            self.limit("checkpoint"))
        elif self.device == "cuda":
            raise Failure(f"no checkpoint: {self.torch_missing}")
        else:
            # Without PyTorch (the CPU dry run in CI) the same weights' distribution, written by hand.
            r = write_random_checkpoint(cfg, path, seed=1)
        self.shape(shape)["params"] = r["params"]
        self.shape(shape)["config"] = cfg
        return r

    def logprobs(self, shape):
        model = os.path.join(self.work, "models", shape)
        rows = os.path.join(self.work, f"logprobs-{shape}.jsonl")
        res, out = self.run(f"logprobs-rectify-{shape}", [self.args.trainer, "rows", "--snapshot", self.args.snapshot, "--rows",
                                                          str(self.mode["logprob_rows"]), "--model", model, "--device", self.device,
                                                          "--out", rows], self.limit("logprobs"), cwd=self.trainer_cwd("shared"))
        r = {"rectify": {**res, "stdout": out.strip()}}
        self.shape(shape)["logprobs"] = r
        r["pytorch"] = self.worker(f"logprobs-pytorch-{shape}", "logprobs", {"model": model, "rows": rows, "device": self.device},
                                   self.limit("logprobs"))
        p = r["pytorch"]
        r["max_abs_diff"] = p["max_abs_diff"]
        if "max_abs_diff_vs_pytorch_tf32" in p:
            r["max_abs_diff_vs_pytorch_tf32"] = p["max_abs_diff_vs_pytorch_tf32"]
        # `not <=`, so that a NaN fails.
        problems = []
        if not p["max_abs_diff"] <= LOGPROB_TOLERANCE:
            tf32 = p.get("max_abs_diff_vs_pytorch_tf32")
            problems.append(f"rectify's log-probabilities differ from PyTorch's by up to {p['max_abs_diff']:.3g} nats"
                            + ("" if tf32 is None else f" (from PyTorch's with TF32 on: {tf32:.3g})"))
        if not p["packed_block_mask_max_abs_diff"] <= LOGPROB_TOLERANCE:
            problems.append(f"PyTorch packed with the block mask the baseline trains with differs by "
                            f"{p['packed_block_mask_max_abs_diff']:.3g} nats")
        if not p["leaky_causal_max_abs_diff"] > LOGPROB_TOLERANCE:
            problems.append("attention leaking across packed examples changes nothing here: the check cannot see it")
        r["pass"] = not problems
        if problems:
            raise Failure("; ".join(problems) + f" (tolerance {LOGPROB_TOLERANCE})")
        return r

    def limit(self, kind):
        return self.mode["limits"][kind]

    def recipe(self, shape, name, steps, micro, recompute=False, extra=""):
        model = os.path.join(self.work, "models", shape)
        out = os.path.join(self.work, "runs", name)
        shutil.rmtree(out, ignore_errors=True)
        path = os.path.join(self.work, name + ".yaml")
        with open(path, "w") as f:
            f.write(f"model: {json.dumps(model)}\nsnapshot: {json.dumps(self.args.snapshot)}\n"
                    f"output_dir: {json.dumps(out)}\nloss: dft\nlr: 1.0e-4\nbatch_tokens: {micro * 2048}\n"
                    f"micro_batch_rows: {micro}\nsteps: {steps}\nseed: {RECIPE_SEED}\ncheckpoint_every: 1000000\n"
                    f"recompute: {'true' if recompute else 'false'}\n{extra}")
        return path, os.path.join(out, "metrics.jsonl")

    def train_rectify(self, shape, name, steps, micro, timeout, tf32=False, recompute=False, extra=""):
        recipe, metrics = self.recipe(shape, name, steps, micro, recompute, extra)
        env = {**self.env, "RECTIFY_TF32": "1"} if tf32 else None
        try:
            res, _ = self.run(name, [self.args.trainer, "train", "--recipe", recipe, "--device", self.device, "--no-save"], timeout,
                              metrics=metrics, env=env, cwd=self.trainer_cwd("tf32" if tf32 else f"train-{shape}"))
        except Failure as e:
            # Steps finished before a failure or a time-out still count, and say so.
            done = read_jsonl(metrics)
            if not done:
                raise
            # A crash (not a time limit) still fails the step, with the figures it left.
            res = {**e.res, "stopped": str(e), "crashed": not e.timed_out}
        lines = read_jsonl(metrics)
        return {**res, **self.throughput(shape, lines), "steps": lines}

    def throughput(self, shape, lines):
        """Steady tokens/s (steps after the first two; all when there are fewer, and then
        `steady` is false: the figure includes the first step's compiling), MFU."""
        if not lines:
            return {}
        steady = lines[2:] if len(lines) > 2 else lines
        tokens = sum(l["tokens"] for l in steady)
        secs = sum(l["tokens"] / l["tokens_per_second"] for l in steady)
        tps = tokens / secs
        fpt = flops_per_token(SHAPES[shape], self.attn_span)
        r = {"tokens_per_second": round(tps, 1), "first_step_seconds": round(lines[0]["tokens"] / lines[0]["tokens_per_second"], 2),
             "first_step_tokens_per_second": round(lines[0]["tokens_per_second"], 1),
             "flops_per_token": fpt, "flops_formula": FLOPS_FORMULA, "achieved_tflops": round(tps * fpt / 1e12, 2),
             "steps_done": len(lines), "steady": len(lines) > 2}
        if self.peaks:
            r["mfu_fp32"] = round(tps * fpt / self.peaks["fp32"], 4)
            r["mfu_tf32_tensor"] = round(tps * fpt / self.peaks["tf32_tensor"], 4)
            r["mfu_peak"] = self.peaks["name"]
        return r

    def train(self, shape):
        steps = self.mode["steps"]
        r = self.train_rectify(shape, f"train-rectify-{shape}", steps, 1, self.limit("train"))
        self.shape(shape)["rectify_steps"] = r.pop("steps")
        # From process start to the first metrics line: loading the checkpoint (and hashing it, for
        # the run's record), NVRTC compiling every kernel (no PTX cache: a first run), the step.
        r["time_to_first_step_s"] = r.get("first_metrics_line_s")
        r["kernels"] = "compiled cold: an empty PTX cache"
        self.shape(shape)["train_rectify"] = r
        return r

    def train_tf32(self, shape):
        """rectify's steps again with TF32 tensor cores allowed (RECTIFY_TF32=1, vendor/README.md),
        then PyTorch eager with TF32 allowed too: the speed both leave on the table in IEEE f32."""
        r = self.train_rectify(shape, f"train-rectify-tf32-{shape}", self.mode["steps"], 1, self.limit("train"), tf32=True)
        steps = r.pop("steps")
        ieee = self.shape(shape).get("rectify_steps") or []
        r["objective_max_rel_diff_vs_ieee"] = max_objective_rel(ieee, steps)
        self.shape(shape)["train_rectify_tf32"] = r
        self.shape(shape)["rectify_tf32_steps"] = steps
        self.train_torch(shape, False, tf32=True)  # recorded as the shape's train_eager_tf32
        return r

    def train_recompute(self, shape):
        """rectify's first steps again with every block recomputed in the backward pass (the
        `recompute` recipe key): the memory it saves on a GPU and the speed it costs."""
        steps = min(4, self.mode["steps"])
        r = self.train_rectify(shape, f"train-rectify-recompute-{shape}", steps, 1, self.limit("train"), recompute=True)
        done = r.pop("steps")
        plain = self.shape(shape).get("rectify_steps") or []
        r["objective_max_rel_diff_vs_plain"] = max_objective_rel(plain, done)
        base = self.shape(shape).get("train_rectify", {})
        if base.get("peak_memory_mib") and r.get("peak_memory_mib"):
            r["peak_memory_vs_plain"] = round(r["peak_memory_mib"] / base["peak_memory_mib"], 3)
        if base.get("tokens_per_second") and r.get("tokens_per_second"):
            r["tokens_per_second_vs_plain"] = round(r["tokens_per_second"] / base["tokens_per_second"], 3)
        self.shape(shape)["train_rectify_recompute"] = r
        return r

    def train_lora(self, shape):
        """LoRA (`LORA`) on the same rows: rectify's steps, then PyTorch's from the same starting
        adapters (rectify's seeded draw, replayed by the worker) with every other weight frozen,
        compared step by step as train_eager is: LoRA's CUDA path, and the memory and speed it
        gives each side."""
        r = self.train_rectify(shape, f"train-rectify-lora-{shape}", self.mode["steps"], 1, self.limit("train"),
                               extra=f"lora: {json.dumps(LORA)}\n")
        self.shape(shape)["rectify_lora_steps"] = r.pop("steps")
        full = self.shape(shape).get("train_rectify", {})
        if full.get("peak_memory_mib") and r.get("peak_memory_mib"):
            r["peak_memory_vs_full_fine_tuning"] = round(r["peak_memory_mib"] / full["peak_memory_mib"], 3)
        self.shape(shape)["train_rectify_lora"] = r
        try:
            return self.train_torch(shape, False, lora=True)
        finally:
            # FLOPS_FORMULA counts every weight's gradient, which LoRA does not compute.
            for d in (r, self.shape(shape).get("train_eager_lora", {})):
                for k in ("flops_per_token", "flops_formula", "achieved_tflops", "mfu_fp32", "mfu_tf32_tensor", "mfu_peak"):
                    d.pop(k, None)

    def train_torch(self, shape, compile_, tf32=False, lora=False):
        steps = self.shape(shape).get("rectify_lora_steps" if lora else "rectify_tf32_steps" if tf32 else "rectify_steps")
        key = "train_eager_lora" if lora else "train_compile" if compile_ else "train_eager_tf32" if tf32 else "train_eager"
        paired = bool(steps)
        if not paired:
            # rectify recorded no step (it failed on this machine): PyTorch's figures still
            # count, on the first rows at the recipe's peak learning rate, without a comparison.
            steps = [{"step": i + 1, "rows": [i % self.rows_count], "lr": 1.0e-4} for i in range(self.mode["steps"])]
        r = self.worker(f"{key}-{shape}", "train",
                        {"model": os.path.join(self.work, "models", shape), "rows": self.rows_file, "device": self.device,
                         "steps": [{"rows": s["rows"], "lr": s["lr"]} for s in steps], "micro": 1, "compile": compile_,
                         "adamw": {"betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01}, "clip": 1.0, "tf32": tf32,
                         "lora": {**LORA, "seed": RECIPE_SEED} if lora else None},
                        self.limit("compile" if compile_ else "torch_train"))
        r.update(self.throughput(shape, r["steps"]))
        if not paired:
            r["paired_with_rectify"] = False
            r["rows"] = "rectify recorded no training step here, so rows 0.. at lr 1e-4: no comparison, no ratio"
            self.shape(shape)[key] = {k: v for k, v in r.items() if k != "steps"}
            return self.shape(shape)[key]
        # The same run, step for step: objective and gradient norm against rectify's.
        cmp = []
        for a, b in zip(steps, r["steps"]):
            cmp.append({"step": a["step"], "objective_rel": rel(a["objective"], b["objective"]),
                        "grad_norm_rel": rel(a["grad_norm"], b["grad_norm"])})
        r["vs_rectify"] = cmp
        if not cmp:
            raise Failure("PyTorch recorded no step to compare with rectify's")
        # NaN-safe: a NaN anywhere makes the largest difference NaN, which fails below.
        diffs = [d for c in cmp for d in (c["objective_rel"], c["grad_norm_rel"])]
        r["max_rel_diff"] = math.nan if any(math.isnan(d) for d in diffs) else max(diffs)
        mine = self.shape(shape).get("train_rectify_lora" if lora else "train_rectify_tf32" if tf32 else "train_rectify", {})
        if mine.get("tokens_per_second") and r.get("tokens_per_second"):
            r["rectify_over_pytorch_tokens_per_second"] = round(mine["tokens_per_second"] / r["tokens_per_second"], 3)
        self.shape(shape)[key] = {k: v for k, v in r.items() if k != "steps"}
        if not r["max_rel_diff"] <= TRAIN_TOLERANCE:
            raise Failure(f"training differs from rectify's by up to {r['max_rel_diff']:.3g} relative (tolerance {TRAIN_TOLERANCE})")
        return self.shape(shape)[key]

    def generate(self, shape):
        model = os.path.join(self.work, "models", shape)
        prompts = os.path.join(self.work, f"prompts-{shape}.jsonl")
        batches, n = self.mode["gen_batches"], self.mode["gen_new_tokens"]
        failure = None
        try:
            res, out = self.run(f"generate-rectify-{shape}",
                                [self.args.trainer, "bench-generate", "--model", model, "--prompts", self.args.prompts, "--batch",
                                 ",".join(map(str, batches)), "--new-tokens", str(n), "--temperature", "0", "--repeat", "2",
                                 "--device", self.device, "--prompts-out", prompts], self.limit("generate"),
                                cwd=self.trainer_cwd("shared"))
        except Failure as e:
            # Batches done before the failure (out of memory at 256, say) still count.
            failure, res, out = e, e.res, e.out
        runs = [json.loads(l) for l in (out or "").splitlines() if l.startswith("{")]
        r = {"new_tokens_per_sequence": n, "decoding": "greedy", "rectify": {"process": res, "runs": runs}}
        if failure:
            r["rectify"]["error"] = str(failure)
        self.shape(shape)["generate"] = r
        # The last run of each batch size: the first may include compiling kernels (rectify) or warm-up.
        last = lambda rs, b: next((x["tokens_per_second"] for x in reversed(rs) if x["batch"] == b), None)
        r["table"] = [{"batch": b, "rectify_tokens_per_second": last(runs, b), "pytorch_tokens_per_second": None} for b in batches]
        if os.path.exists(prompts):
            r["pytorch"] = self.worker(f"generate-pytorch-{shape}", "generate",
                                       {"model": model, "prompts": prompts, "device": self.device, "batches": batches, "new_tokens": n},
                                       self.limit("generate"))
            for row in r["table"]:
                row["pytorch_tokens_per_second"] = last(r["pytorch"]["runs"], row["batch"])
                if row["rectify_tokens_per_second"] and row["pytorch_tokens_per_second"]:
                    row["rectify_over_pytorch"] = round(row["rectify_tokens_per_second"] / row["pytorch_tokens_per_second"], 3)
        if failure:
            raise failure
        return r

    def microbatch(self, shape):
        tried = []
        largest = 1 if self.shape(shape).get("train_rectify") else None
        limit = "every size tried fits"
        # Each shape's search has a share of the budget, so that torch.compile still gets its turn.
        ends = time.time() + self.limit("microbatch_search")
        for mb in self.mode["microbatches"][shape]:
            if mb > self.rows_count:
                limit = f"the snapshot has {self.rows_count} rows"
                break
            if self.left() < 30 or ends - time.time() < 15:
                limit = "time, not memory: the search's share of the budget ran out, larger sizes were not tried"
                break
            # The search's share, not the size's own limit, may be what cuts this one short.
            capped = ends - time.time() < self.limit("microbatch")
            try:
                r = self.train_rectify(shape, f"microbatch-{shape}-{mb}", 1, mb, min(self.limit("microbatch"), ends - time.time()))
            except Failure as e:
                tried.append({"micro_batch_rows": mb, "ok": False, "error": str(e), **e.res})
                limit = "time, not memory: " + str(e) if e.deadline or (capped and e.timed_out) else f"{mb} rows failed (see its error)"
                break
            if "stopped" in r:
                tried.append({"micro_batch_rows": mb, "ok": False, "error": r["stopped"]})
                limit = f"{mb} rows stopped: {r['stopped']}"
                break
            tried.append({"micro_batch_rows": mb, "ok": True, "step_tokens_per_second": r["first_step_tokens_per_second"],
                          "peak_memory_mib": r["peak_memory_mib"]})
            largest = mb
        r = {"largest_micro_batch_rows": largest, "limit": limit, "tried": tried,
             "note": "each size runs one optimizer step (forward, backward, AdamW) in its own process; kernels that shape's "
                     "training run compiled come from its PTX cache, new ones are compiled within the step"}
        self.shape(shape)["microbatch"] = r
        return r

    def heldout(self, shape):
        """The trainer's held-out loss on CUDA: one DFT step with the default run's held-out
        snapshot as `validation_snapshot`, measured before and after the step, row by row without
        gradients (the path `validation.rs` takes on a GPU). The measurement before the step must
        equal PyTorch's over the same rows: the same count of target tokens, and the token means
        of the cross-entropy, the probability and the DFT objective to HELDOUT_TOLERANCE."""
        name = f"heldout-{shape}"
        rows = os.path.join(self.work, "heldout-rows.jsonl")
        if not os.path.exists(rows):
            self.run("heldout-rows", [self.args.trainer, "rows", "--snapshot", self.args.heldout, "--out", rows], 120)
        extra = f"validation_snapshot: {json.dumps(self.args.heldout)}\nvalidation_every: 1\n"
        recipe, metrics = self.recipe(shape, name, 1, 1, extra=extra)
        log = os.path.join(os.path.dirname(metrics), "validation.jsonl")
        failure = None
        try:
            res, _ = self.run(name, [self.args.trainer, "train", "--recipe", recipe, "--device", self.device, "--no-save"],
                              self.limit("heldout"), cwd=self.trainer_cwd(f"train-{shape}"))
        except Failure as e:
            # A crash after the first measurement still leaves it to compare.
            failure, res = e, e.res
        lines = read_jsonl(log)
        steps = [l.get("step") for l in lines]
        r = {"rectify": {**res, "lines": lines}}
        self.shape(shape)["heldout"] = r
        if steps[:1] != [0]:
            raise failure or Failure(f"validation.jsonl has steps {steps}: no measurement before the step")
        if failure:
            r["rectify"]["error"] = str(failure)
        elif steps != [0, 1]:
            raise Failure(f"validation.jsonl has steps {steps}, not [0, 1]")
        theirs = self.worker(f"heldout-pytorch-{shape}", "heldout",
                             {"model": os.path.join(self.work, "models", shape), "rows": rows, "device": self.device},
                             self.limit("heldout"))
        r["pytorch"] = theirs
        mine = lines[0]
        r["rel_diff"] = {k: rel(mine[k], theirs[k]) for k in ("cross_entropy", "mean_token_prob")}
        r["rel_diff"]["objective"] = rel(mine["objective"], theirs["objective_dft"])
        problems = [f"{k} differs by {v:.3g} relative" for k, v in r["rel_diff"].items() if not v <= HELDOUT_TOLERANCE]
        if mine["loss_tokens"] != theirs["loss_tokens"] or mine["rows"] != theirs["rows"]:
            problems.append(f"rectify measured {mine['loss_tokens']} target tokens in {mine['rows']} rows, PyTorch "
                            f"{theirs['loss_tokens']} in {theirs['rows']}")
        r["pass"] = not problems
        if problems:
            raise Failure("held-out loss before the first step against PyTorch's: " + "; ".join(problems)
                          + f" (tolerance {HELDOUT_TOLERANCE})")
        if failure:
            raise failure
        return r

    def report(self):
        print()
        env = self.results.get("env", {})
        print(f"rectify GPU check ({self.results['mode']}): {env.get('gpu') or 'CPU'}; torch {env.get('torch')}; "
              f"{time.time() - self.t0:.0f} s")
        hdr = f"{'shape':<14} {'logprob max|d|':>14} {'rectify tok/s':>13} {'MFU fp32':>8} {'peak MiB':>9} {'1st step s':>10} " \
              f"{'torch tok/s':>11} {'ratio':>6} {'compile tok/s':>13} {'max mb':>6}"
        print(hdr)
        for name, s in self.results["shapes"].items():
            lp = s.get("logprobs", {}).get("max_abs_diff")
            tr, te, tc = s.get("train_rectify", {}), s.get("train_eager", {}), s.get("train_compile", {})
            print(f"{name:<14} {fmt(lp, '.2e'):>14} {tps(tr):>13} {fmt(tr.get('mfu_fp32'), '.1%'):>8} "
                  f"{fmt(tr.get('peak_memory_mib'), '.0f'):>9} {fmt(tr.get('time_to_first_step_s'), '.1f'):>10} "
                  f"{tps(te):>11} {fmt(te.get('rectify_over_pytorch_tokens_per_second'), '.2f'):>6} "
                  f"{tps(tc):>13} {fmt(s.get('microbatch', {}).get('largest_micro_batch_rows'), 'd'):>6}")
            t32, e32 = s.get("train_rectify_tf32", {}), s.get("train_eager_tf32", {})
            if t32:
                print(f"{'':<14} TF32 allowed: rectify {tps(t32)} tok/s, PyTorch eager {tps(e32)} tok/s")
            rc = s.get("train_rectify_recompute", {})
            if rc:
                print(f"{'':<14} recompute every block: rectify {fmt(rc.get('tokens_per_second'), '.0f')} tok/s, "
                      f"{fmt(rc.get('peak_memory_mib'), '.0f')} MiB peak ({fmt(rc.get('peak_memory_vs_plain'), '.2f')}x the plain run's)")
            lr_, le = s.get("train_rectify_lora", {}), s.get("train_eager_lora", {})
            if lr_:
                print(f"{'':<14} LoRA r{LORA['rank']}: rectify {tps(lr_)} tok/s, {fmt(lr_.get('peak_memory_mib'), '.0f')} MiB peak; "
                      f"PyTorch eager {tps(le)} tok/s, {fmt(le.get('process', {}).get('peak_memory_mib'), '.0f')} MiB; "
                      f"steps {fmt(le.get('max_rel_diff'), '.1e')} relative apart")
            ho = s.get("heldout", {})
            if ho.get("rectify", {}).get("lines"):
                against = f"{fmt(max(ho['rel_diff'].values()), '.1e')} relative from PyTorch's" if ho.get("rel_diff") else "no PyTorch"
                print(f"{'':<14} held-out loss before the step: cross-entropy "
                      f"{fmt(ho['rectify']['lines'][0].get('cross_entropy'), '.5f')}, {against}")
            for g in s.get("generate", {}).get("table", []):
                print(f"{'':<14} generate batch {g['batch']}: rectify {fmt(g['rectify_tokens_per_second'], '.0f')} tok/s, "
                      f"PyTorch {fmt(g['pytorch_tokens_per_second'], '.0f')} tok/s")
        if any(r.get("steady") is False for s in self.results["shapes"].values() for r in s.values() if isinstance(r, dict)):
            print("  * two steps or fewer: the tokens/s include the first step (its kernel compiling and warm-up)")
        for name, s in self.results["shapes"].items():
            for key, r in s.items():
                if isinstance(r, dict) and "stopped" in r:
                    print(f"  STOPPED {key} {name} after {r.get('steps_done')} steps (those kept): {r['stopped']}")
        for s in self.results["steps"]:
            if "error" in s:
                print(f"  FAILED {s['step']}: {s['error']}")
            elif "skipped" in s:
                print(f"  SKIPPED {s['step']}: {s['skipped']}")
        print(f"results: {os.path.join(self.out, 'gpu_check.json')}")


class Skip(Exception):
    pass


class Failure(Exception):
    """A failed process or check. `timed_out`: killed at its time limit; `deadline`: that limit
    was the check's budget, so it is reported as skipped, not failed."""

    def __init__(self, msg, res=None, out="", deadline=False, timed_out=False):
        super().__init__(msg)
        self.res = res or {}
        self.out = out
        self.deadline = deadline
        self.timed_out = timed_out


class Monitor:
    """Peak memory of one process, polled: GPU memory from nvidia-smi (the process's own when
    its pid is visible, else the whole device's minus what was in use at the start), CPU peak
    RSS from /proc. Also notes when a metrics file gets its first line."""

    def __init__(self, pid, device, metrics, t0):
        self.pid, self.device, self.metrics, self.t0 = pid, device, metrics, t0
        self.proc_peak, self.dev_peak, self.rss_peak, self.first_line_s = None, None, None, None
        self.base = gpu_used_total() if device == "cuda" else None
        self.source = "nvidia-smi" if device == "cuda" else "VmHWM"
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self.loop, daemon=True)]
        if metrics:
            # Its own thread: an nvidia-smi call in the memory loop can take a second.
            self.threads.append(threading.Thread(target=self.watch_metrics, daemon=True))
        for t in self.threads:
            t.start()

    def loop(self):
        while not self.done.is_set():
            self.sample()
            self.done.wait(0.25)

    def watch_metrics(self):
        while not self.done.is_set() and self.first_line_s is None:
            if os.path.exists(self.metrics) and os.path.getsize(self.metrics) > 0:
                self.first_line_s = time.time() - self.t0
            self.done.wait(0.05)

    def sample(self):
        if self.device == "cuda":
            procs = gpu_used_by_pid()
            tree = process_tree(self.pid)
            mine = sum(v for p, v in procs.items() if p in tree)
            if mine:
                self.proc_peak = max(self.proc_peak or 0, mine)
            total = gpu_used_total()
            if total is not None and self.base is not None:
                self.dev_peak = max(self.dev_peak or 0, total - self.base)
        else:
            try:
                for line in open(f"/proc/{self.pid}/status"):
                    if line.startswith("VmHWM:"):
                        self.rss_peak = max(self.rss_peak or 0, int(line.split()[1]) / 1024)
            except OSError:
                pass

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join()

    def peak_mib(self):
        if self.device == "cuda":
            if self.proc_peak:
                return self.proc_peak
            self.source = "nvidia-smi, whole device less the memory in use before the process"
            return self.dev_peak
        return round(self.rss_peak, 1) if self.rss_peak else None


def kill_group(p):
    """SIGKILL `p`'s process group (each measurement runs in its own session); it may be gone."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def nvidia_smi(*args):
    """nvidia-smi's stdout, or "" when it is missing or fails (memory then goes unrecorded)."""
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def gpu_used_by_pid():
    q = nvidia_smi("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
    out = {}
    for line in q.splitlines():
        parts = [x.strip() for x in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            out[int(parts[0])] = out.get(int(parts[0]), 0) + int(parts[1])
    return out


def gpu_used_total():
    out = nvidia_smi("--query-gpu=memory.used", "--format=csv,noheader,nounits").split()
    try:
        return sum(int(x) for x in out) if out else None
    except ValueError:
        return None


def process_tree(pid):
    """`pid` and its descendants (a wrapper process may run the one that holds the GPU)."""
    parent = {}
    try:
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    parent[int(d)] = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
    except OSError:
        pass
    kids, grew = {pid}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in kids} - kids
        kids |= new
        grew = bool(new)
    return kids


def driver_cuda_version():
    """The CUDA version the driver supports, as (major, minor), or None: from libcuda's
    cuDriverGetVersion, else `nvidia-smi`'s "CUDA Version: X.Y"."""
    try:
        import ctypes
        v = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value > 0:
            return v.value // 1000, (v.value % 1000) // 10
    except (OSError, AttributeError):
        pass
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi())
    return (int(m.group(1)), int(m.group(2))) if m else None


def nvrtc_minor(lib_dir):
    """The minor version of the CUDA 13 NVRTC in `lib_dir` (libnvrtc-builtins.so.13.M, else
    libnvrtc.so.13.M...), or None when the file names do not say."""
    for pattern in ("libnvrtc-builtins.so.13.*", "libnvrtc.so.13.*"):
        minors = [int(m.group(1)) for f in glob.glob(os.path.join(lib_dir, pattern))
                  if (m := re.match(r".*\.so\.13\.(\d+)", os.path.basename(f)))]
        if minors:
            return max(minors)
    return None


def cuda_libraries(env, work, driver=None):
    """Make NVRTC and the CUDA runtime findable by the trainer (cudarc loads them at run time)
    and point CUDA_PATH at headers NVRTC can include. A CUDA toolkit in the usual places comes
    first; PyTorch's `nvidia-*` wheels are the fallback. `driver` is the driver's CUDA version
    (major, minor): rectify's kernels are PTX that NVRTC writes and the driver loads, and a driver
    refuses PTX from a newer NVRTC (CUDA_ERROR_UNSUPPORTED_PTX_VERSION; minor-version
    compatibility does not cover PTX), so an NVRTC no newer than the driver is preferred.
    Returns what was found."""
    roots = []
    if env.get("CUDA_PATH"):
        roots.append(env["CUDA_PATH"])
    roots += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    site = []
    for p in sys.path:
        site += glob.glob(os.path.join(p, "nvidia", "cu*")) + glob.glob(os.path.join(p, "nvidia", "cuda_nvrtc"))
    lib_dirs, found = [], {}
    for r in roots + sorted(set(site)):
        for sub in ("lib64", "lib", "targets/x86_64-linux/lib"):
            d = os.path.join(r, sub)
            if glob.glob(os.path.join(d, "libnvrtc.so*")):
                lib_dirs.append(d)
        if "cuda_path" not in found and os.path.exists(os.path.join(r, "include", "cuda.h")):
            found["cuda_path"] = r
    # The trainer is built for CUDA 13 and cudarc tries the unversioned name in every folder
    # first: folders with CUDA 13's NVRTC go first, so an older toolkit's is not the one loaded.
    def too_new(d):
        m = nvrtc_minor(d)
        return driver is not None and m is not None and (13, m) > tuple(driver)

    lib_dirs.sort(key=lambda d: (not glob.glob(os.path.join(d, "libnvrtc.so.13*")), too_new(d)))
    if driver is not None:
        found["driver_cuda"] = f"{driver[0]}.{driver[1]}"
    if lib_dirs:
        found["nvrtc"] = lib_dirs[0]
        found["nvrtc_minor"] = nvrtc_minor(lib_dirs[0])
        if too_new(lib_dirs[0]):
            found["warning"] = (f"NVRTC 13.{found['nvrtc_minor']} is newer than the driver's CUDA {found['driver_cuda']}: "
                                "the driver may refuse the PTX it writes (CUDA_ERROR_UNSUPPORTED_PTX_VERSION)")
        # Headers from the same toolkit as NVRTC, where it has them.
        root = re.sub(r"/(lib64|lib|targets/x86_64-linux/lib)$", "", lib_dirs[0])
        if not env.get("CUDA_PATH") and os.path.exists(os.path.join(root, "include", "cuda.h")):
            found["cuda_path"] = root
        found["nvrtc_files"] = sorted(os.path.basename(f) for f in glob.glob(os.path.join(lib_dirs[0], "libnvrtc.so*")))
        # cudarc asks for the unversioned `libnvrtc.so` before `libnvrtc.so.13`, and the loader
        # looks for one name in every folder before the next name: a folder that has only the
        # versioned file (PyTorch's wheels) would lose to an older toolkit's unversioned one. A
        # folder of its own, first on the path, names the chosen file.
        versioned = sorted(glob.glob(os.path.join(lib_dirs[0], "libnvrtc.so.13*")))
        if versioned and not os.path.exists(os.path.join(lib_dirs[0], "libnvrtc.so")):
            link_dir = os.path.join(work, "nvrtc")
            os.makedirs(link_dir, exist_ok=True)
            os.symlink(versioned[0], os.path.join(link_dir, "libnvrtc.so"))
            lib_dirs.insert(0, link_dir)
            found["nvrtc_link"] = f"{link_dir}/libnvrtc.so -> {versioned[0]}"
    if "cuda_path" in found and not env.get("CUDA_PATH"):
        env["CUDA_PATH"] = found["cuda_path"]
    if lib_dirs:
        env["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(lib_dirs + [x for x in env.get("LD_LIBRARY_PATH", "").split(":") if x]))
    return found


def head_dim(cfg):
    """A head's width: `head_dim`, else transformers' default (128 for Qwen3, whatever the
    hidden size; hidden_size / heads for the others)."""
    if cfg.get("head_dim"):
        return cfg["head_dim"]
    return 128 if cfg["model_type"] == "qwen3" else cfg["hidden_size"] // cfg["num_attention_heads"]


def flops_per_token(cfg, span):
    """Training FLOPs per token: 6·N + 12·L·d·S (the PaLM appendix convention), with N the
    weights of every matrix product (the output projection counted once even when tied to the
    embedding; the embedding lookup is no product), L layers, d = heads·head_dim and S the mean
    span attention covers (the token-weighted mean length of a packed example: attention never
    crosses examples)."""
    h, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = head_dim(cfg)
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * cfg["intermediate_size"]
    n = L * per_layer + V * h
    return 6 * n + 12 * L * q * span


def write_random_checkpoint(cfg, path, seed):
    """A Hugging Face folder (config.json + model.safetensors, f32) with random weights, written
    with the standard library alone, drawn from the distributions the PyTorch worker uses:
    matrices N(0, init_std), norm weights U(0.5, 1.5), biases N(0, 0.5)."""
    os.makedirs(path, exist_ok=True)
    rng = random.Random(seed)
    std = init_std(cfg["hidden_size"])
    tensors = {}
    for name, shape in hf_shapes(cfg):
        n = math.prod(shape)
        if "norm" in name:
            vals = [rng.uniform(0.5, 1.5) for _ in range(n)]
        elif name.endswith(".bias"):
            vals = [rng.gauss(0.0, 0.5) for _ in range(n)]
        else:
            vals = [rng.gauss(0.0, std) for _ in range(n)]
        tensors[name] = (shape, struct.pack(f"<{n}f", *vals))
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name in sorted(tensors):
        shape, blob = tensors[name]
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)
    config = {**cfg, "architectures": [ARCHITECTURES[cfg["model_type"]][0]],
              "hidden_act": "silu", "dtype": "float32", "initializer_range": std}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return {"params": sum(math.prod(s) for s, _ in tensors.values()), "writer": "python standard library (no PyTorch)"}


def hf_shapes(cfg):
    h, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    hd = head_dim(cfg)
    q, kv, i = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd, cfg["intermediate_size"]
    out = [("model.embed_tokens.weight", (cfg["vocab_size"], h)), ("model.norm.weight", (h,))]
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (cfg["vocab_size"], h)))
    for l in range(L):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (q, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, q)),
                (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)), (p + "mlp.down_proj.weight", (h, i))]
        if cfg["model_type"] == "qwen2":
            out += [(p + "self_attn.q_proj.bias", (q,)), (p + "self_attn.k_proj.bias", (kv,)), (p + "self_attn.v_proj.bias", (kv,))]
        if cfg["model_type"] == "qwen3":
            out += [(p + "self_attn.q_norm.weight", (hd,)), (p + "self_attn.k_norm.weight", (hd,))]
    return out


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip()]


def tail(path, n=6):
    """What went wrong, from a process's stderr: the first panic's message (later panics of
    other threads are often consequences), rectify's `error:` line and Python's last exception
    line when there are any, else the last lines."""
    lines = [l.rstrip() for l in open(path, errors="replace") if l.strip()]
    picked = []
    for i, l in enumerate(lines):
        if " panicked at " in l and i + 1 < len(lines) and not any("panicked" in p for p in picked):
            picked += [l.strip(), lines[i + 1].strip()]
        elif l.startswith("error: ") or (not l.startswith(" ") and "Error" in l.split(":")[0]):
            picked.append(l.strip())
    # The head of each line: a kernel that does not compile panics with NVRTC's message first and
    # the whole kernel source after it, on one line.
    return " | ".join(l[:600] for l in (picked[:3] or lines[-n:])) or "(no stderr)"


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def max_objective_rel(steps_a, steps_b):
    """The largest relative difference of two runs' objectives, step by step (None: no step)."""
    return max((rel(a["objective"], b["objective"]) for a, b in zip(steps_a, steps_b)), default=None)


def tps(rec):
    """A run's tokens/s for the table, starred when it is not a steady figure (see `throughput`)."""
    return fmt(rec.get("tokens_per_second"), ".0f") + ("*" if rec.get("steady") is False else "")


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="gpu")
    ap.add_argument("--trainer", required=True)
    ap.add_argument("--snapshot", required=True, help="the default train snapshot")
    ap.add_argument("--heldout", required=True, help="the default run's held-out snapshot (datasets/recipes/validation.yaml)")
    ap.add_argument("--prompts", required=True, help="a prompts snapshot (GSM8K test)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", help="where the check makes its folder gpu-check-work-MODE for checkpoints, runs and logs "
                                   "(default bench-out); that folder is removed at the end unless --keep")
    ap.add_argument("--budget", type=float, help="seconds for the whole check (default: gpu 420, cpu 900)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--shapes", help="comma-separated shapes to check (default: the mode's, " + "; ".join(
        f"{m}: {','.join(v['shapes'])}" for m, v in MODES.items()) + "; also, when named: " + ",".join(
        s for v in MODES.values() for s in v.get("more_shapes", [])) + ")")
    ap.add_argument("--only", help="comma-separated measurements to run (" + ",".join(STEP_KINDS) + "), for a second run "
                                   "that fills in what a first one skipped; the environment and the models are always made")
    args = ap.parse_args()
    for opt, known in (("shapes", MODES[args.mode]["shapes"] + MODES[args.mode].get("more_shapes", [])), ("only", STEP_KINDS)):
        picked = getattr(args, opt)
        unknown = [repr(x) for x in (picked or "").split(",") if picked is not None and x not in known]
        if unknown:
            ap.error(f"--{opt}: unknown {', '.join(unknown)} for --mode {args.mode} (known: {', '.join(known)})")
    c = Check(args)

    def interrupted(signum, _frame):
        # Killed from outside (a loan's time limit, Ctrl-C): stop the running measurement, whose
        # session would outlive this process and hold the GPU, and keep what was measured.
        if c.child is not None:
            kill_group(c.child)
        c.results["interrupted"] = f"signal {signum} after {time.time() - c.t0:.0f} s"
        try:
            c.save()
        finally:
            # SystemExit, which `step` does not catch: the check stops here.
            sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    try:
        return run_all(c)
    finally:
        if not args.keep:
            shutil.rmtree(c.work, ignore_errors=True)


# The measurements `--only` picks from, in the order `run_all` runs them.
STEP_KINDS = ["logprobs", "train_rectify", "train_eager", "generate", "heldout", "microbatch", "train_compile", "train_tf32",
              "train_recompute", "train_lora"]
# Those that replay rectify's training steps or compare with them (and load the kernels that run
# compiled): `--only` runs train_rectify with them.
PAIRED_WITH_TRAIN = ["train_eager", "heldout", "microbatch", "train_compile", "train_tf32", "train_recompute"]


def run_all(c):
    c.step("environment", c.environment, min_seconds=0)
    if "environment" in c.failed:
        c.report()
        return 1
    # Shape by shape: correctness, training and its PyTorch baseline, so that every shape's core
    # figures are in before anything else; then generation (the issue asks for it once, at batch
    # 64 and 256) for the first shape that has a model, the micro-batch searches (each capped, so
    # that time remains), torch.compile, the other shapes' generation, and the optional TF32 and
    # recompute runs, while time remains.
    ready, tf32_done = [], set()
    for s in c.shapes:
        c.step(f"checkpoint {s}", c.checkpoint, s)
        if not os.path.exists(os.path.join(c.work, "models", s, "config.json")):
            continue
        ready.append(s)
        c.step(f"logprobs {s}", c.logprobs, s)
        c.step(f"train_rectify {s}", c.train, s, min_seconds=30)
        if c.device == "cuda" and f"train_rectify {s}" in c.failed:
            # IEEE f32 products go through a matmul path no GPU had run before this check
            # (vendor/README.md); TF32's is upstream's own. Run now, not last, it still gives
            # rectify's training figures on this GPU.
            c.step(f"train_tf32 {s}", c.train_tf32, s, min_seconds=60, required=False)
            tf32_done.add(s)
        c.step(f"train_eager {s}", c.train_torch, s, False, min_seconds=30)
    if ready:
        c.step(f"generate {ready[0]}", c.generate, ready[0], min_seconds=30)
        # The held-out loss's CUDA path, once, for the cheap shape: a correctness check, so
        # before the searches and the optional runs that may use up the budget.
        c.step(f"heldout {ready[0]}", c.heldout, ready[0], min_seconds=40)
    for s in ready:
        c.step(f"microbatch {s}", c.microbatch, s, min_seconds=45)
    for s in ready:
        # Not required to pass: torch.compile may not work on a given machine.
        c.step(f"train_compile {s}", c.train_torch, s, True, min_seconds=90, required=False)
    for s in ready[1:]:
        c.step(f"generate {s}", c.generate, s, min_seconds=60)
    for s in reversed(ready):
        # Optional, the larger shape first (where LoRA's memory matters): LoRA against PyTorch.
        c.step(f"train_lora {s}", c.train_lora, s, min_seconds=60, required=False)
    if c.device == "cuda":
        for s in (s for s in ready if s not in tf32_done):
            # Optional: the IEEE f32 figures above are the check; TF32 is the opt-in speed.
            c.step(f"train_tf32 {s}", c.train_tf32, s, min_seconds=60, required=False)
    for s in reversed(ready):
        # Optional, the larger shape first (where memory matters): what recompute saves.
        c.step(f"train_recompute {s}", c.train_recompute, s, min_seconds=40, required=False)
    c.results["failed_steps"] = c.failed
    c.results["incomplete_steps"] = [s["step"] for s in c.results["steps"] if "skipped" in s]
    c.results["seconds"] = round(time.time() - c.t0, 1)
    c.save()
    c.report()
    return 1 if c.failed else 0


# ---------------------------------------------------------------- PyTorch workers


# When this worker process started (before importing PyTorch), for its time to the first step.
WORKER_T0 = time.time()


def worker(task, args_path):
    import torch

    a = json.load(open(args_path))
    # IEEE float32 products.
    set_tf32(torch, False)
    dev = torch.device(a.get("device", "cpu"))
    result = {"checkpoint": w_checkpoint, "logprobs": w_logprobs, "heldout": w_heldout, "train": w_train,
              "generate": w_generate}[task](torch, dev, a)
    if dev.type == "cuda":
        result["torch_max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        result["torch_max_memory_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    else:
        import resource

        # Linux reports ru_maxrss in KiB: the process's peak resident set (make bench-train).
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def load_model(torch, dev, path):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").to(dev)
    return m


def w_checkpoint(torch, dev, a):
    import transformers

    cfg = dict(a["config"])
    kind = cfg.pop("model_type")
    Config = getattr(transformers, ARCHITECTURES[kind][1])
    config = Config(**cfg, initializer_range=init_std(cfg["hidden_size"]))
    torch.manual_seed(a["seed"])
    t = time.time()
    with torch.device(dev):
        m = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize_norms_and_biases(torch, m)
    m.save_pretrained(a["path"])
    return {"params": sum(p.numel() for p in m.parameters()), "seconds": round(time.time() - t, 2),
            "writer": f"transformers {transformers.__version__} save_pretrained",
            "files": sorted(os.listdir(a["path"]))}


def rows_of(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def segments(seg_ids):
    """(start, length) of each run of equal segment ids; padding (0) left out."""
    out, start = [], 0
    for i in range(1, len(seg_ids) + 1):
        if i == len(seg_ids) or seg_ids[i] != seg_ids[start]:
            if seg_ids[start] != 0:
                out.append((start, i - start))
            start = i
    return out


def block_mask(torch, seg_rows, dev):
    """Additive float mask [b, 1, T, T]: causal within each packed example, nothing across
    (padding attends to itself only, so no row of the softmax is empty)."""
    seg = torch.tensor(seg_rows, device=dev)
    T = seg.shape[1]
    same = seg[:, :, None] == seg[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
    pad_self = (seg[:, :, None] == 0) & torch.eye(T, dtype=torch.bool, device=dev)
    allowed = (same & causal & (seg[:, :, None] != 0)) | pad_self
    mask = torch.zeros(allowed.shape, dtype=torch.float32, device=dev)
    mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)
    return mask[:, None]


def w_logprobs(torch, dev, a):
    """PyTorch's log-probabilities of each packed example run alone, against rectify's. Also
    the packed forward with the block mask the training baseline uses (it must agree too), and
    plain causal attention over the whole row (it must not: that is the check's sensitivity)."""
    m = load_model(torch, dev, a["model"])
    m.eval()
    stats = {"alone": [], "masked": [], "leaky": []}
    values = []
    with torch.no_grad():
        for r in rows_of(a["rows"]):
            ids, pos, seg, mine = r["input_ids"], r["position_ids"], r["segment_ids"], r["logprobs"]
            # Each example alone, positions from 0.
            for s, n in segments(seg):
                x = torch.tensor([ids[s:s + n]], device=dev)
                lp = torch.log_softmax(m(input_ids=x).logits.float(), -1)[0]
                theirs = lp[:-1].gather(1, x[0, 1:, None])[:, 0].cpu().tolist()
                for k in range(1, n):
                    stats["alone"].append(abs(theirs[k - 1] - mine[s + k]))
                    values.append(mine[s + k])
            x = torch.tensor([ids], device=dev)
            p = torch.tensor([pos], device=dev)
            for key, mask in (("masked", block_mask(torch, [seg], dev)), ("leaky", None)):
                logits = m(input_ids=x, position_ids=p, attention_mask=mask).logits if mask is not None else m(input_ids=x).logits
                lp = torch.log_softmax(logits.float(), -1)[0]
                theirs = lp[:-1].gather(1, x[0, 1:, None])[:, 0].cpu().tolist()
                for s, n in segments(seg):
                    for k in range(1, n):
                        stats[key].append(abs(theirs[s + k - 1] - mine[s + k]))
    mean = sum(values) / len(values)
    r = {"tokens": len(values), "max_abs_diff": max(stats["alone"]), "mean_abs_diff": sum(stats["alone"]) / len(values),
         "packed_block_mask_max_abs_diff": max(stats["masked"]),
         "leaky_causal_max_abs_diff": max(stats["leaky"]),
         "logprob_mean": mean, "logprob_std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)),
         "reference": "each packed example run alone through transformers (sdpa, float32, TF32 off)"}
    if dev.type == "cuda":
        # The same reference with TF32 tensor cores allowed: if rectify's difference shrinks
        # here, its f32 matmuls ran as TF32, not wrong. An extra: its failure (a PyTorch that
        # refuses the TF32 switch) is recorded beside the IEEE figures above, not instead of them.
        try:
            set_tf32(torch, True)
            tf32 = []
            with torch.no_grad():
                for row in rows_of(a["rows"]):
                    ids, seg, mine = row["input_ids"], row["segment_ids"], row["logprobs"]
                    for s, n in segments(seg):
                        x = torch.tensor([ids[s:s + n]], device=dev)
                        lp = torch.log_softmax(m(input_ids=x).logits.float(), -1)[0]
                        theirs = lp[:-1].gather(1, x[0, 1:, None])[:, 0].cpu().tolist()
                        tf32 += [abs(theirs[k - 1] - mine[s + k]) for k in range(1, n)]
            r["max_abs_diff_vs_pytorch_tf32"] = max(tf32)
            r["mean_abs_diff_vs_pytorch_tf32"] = sum(tf32) / len(tf32)
        except Exception as e:
            r["pytorch_tf32_error"] = f"{type(e).__name__}: {e}"
        finally:
            set_tf32(torch, False)
    return r


def w_heldout(torch, dev, a):
    """The token means over every target token of the rows (packed, with the block mask the
    training baseline uses), without gradients: what the trainer's `validation.jsonl` records
    for a DFT run."""
    m = load_model(torch, dev, a["model"])
    m.eval()
    rows = rows_of(a["rows"])
    nll, prob, dft, n = 0.0, 0.0, 0.0, 0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["input_ids"]], device=dev)
            pos = torch.tensor([r["position_ids"]], device=dev)
            mask = torch.tensor(r["loss_mask"][1:], device=dev, dtype=torch.bool)
            logits = m(input_ids=ids, position_ids=pos, attention_mask=block_mask(torch, [r["segment_ids"]], dev)).logits
            lp = torch.log_softmax(logits[0, :-1].float(), -1).gather(1, ids[0, 1:, None])[:, 0][mask].double()
            nll -= lp.sum().item()
            prob += lp.exp().sum().item()
            dft -= (lp.exp() * lp).sum().item()
            n += lp.numel()
    return {"rows": len(rows), "loss_tokens": n, "cross_entropy": nll / n, "mean_token_prob": prob / n, "objective_dft": dft / n,
            "reference": "transformers (sdpa, float32, TF32 off), packed rows with a block-diagonal causal mask; sums in float64"}


def set_tf32(torch, on):
    """TF32 for float32 matrix products on or off (the newer switch where there is one:
    torch.compile refuses a mix of the old and new ones)."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = "tf32" if on else "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = on


def sync(torch, dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def w_train(torch, dev, a):
    """rectify's DFT steps replayed: the same rows per step, the same learning rates, AdamW
    with decay on matrices only, one clip over the global gradient norm."""
    set_tf32(torch, a.get("tf32", False))
    m = load_model(torch, dev, a["model"])
    if a.get("lora_adapter"):
        # LoRA (`bench_train --lora`): rectify's starting adapters, trained by PEFT.
        import peft

        m = peft.PeftModel.from_pretrained(m, a["lora_adapter"], is_trainable=True)
    elif a.get("lora"):
        add_lora(torch, m, a["lora"], dev)
    m.train()
    m.config.use_cache = False
    rows = rows_of(a["rows"])
    trained = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    decay = [p for n, p in trained if not (n.endswith(".bias") or "norm" in n)]
    rest = [p for n, p in trained if n.endswith(".bias") or "norm" in n]
    o = a["adamw"]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]}, {"params": rest, "weight_decay": 0.0}], lr=0.0,
                            betas=tuple(o["betas"]), eps=o["eps"])
    fwd = torch.compile(m) if a["compile"] else m
    out = []
    for step in a["steps"]:
        sync(torch, dev)
        t = time.time()
        batch = [rows[i] for i in step["rows"]]
        n_tok = sum(sum(1 for i in range(1, len(r["loss_mask"])) if r["loss_mask"][i]) for r in batch)
        obj_sum = 0.0
        for k in range(0, len(batch), a["micro"]):
            mb = batch[k:k + a["micro"]]
            ids = torch.tensor([r["input_ids"] for r in mb], device=dev)
            pos = torch.tensor([r["position_ids"] for r in mb], device=dev)
            mask = torch.tensor([r["loss_mask"][1:] for r in mb], device=dev, dtype=torch.float32)
            logits = fwd(input_ids=ids, position_ids=pos, attention_mask=block_mask(torch, [r["segment_ids"] for r in mb], dev)).logits
            lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(2, ids[:, 1:, None])[..., 0]
            obj = -(mask * lp.detach().exp() * lp).sum() / n_tok
            obj.backward()
            obj_sum += obj.item()
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in trained], a["clip"]).item()
        for g in opt.param_groups:
            g["lr"] = step["lr"]
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(torch, dev)
        secs = time.time() - t
        tokens = sum(len(r["input_ids"]) for r in batch)
        out.append({"objective": obj_sum, "grad_norm": norm, "seconds": secs, "tokens": tokens, "tokens_per_second": tokens / secs})
        if len(out) == 1:
            # As rectify's: from process start (imports, loading, compiling) to the first step done.
            first_done = time.time() - WORKER_T0
        print(json.dumps({"partial_step": out[-1], "first_step_done_s": round(first_done, 2)}), flush=True)
    import transformers

    return {"steps": out, "compile": a["compile"], "attention": "sdpa with a block-diagonal causal float mask",
            "time_to_first_step_s": round(first_done, 2) if out else None,
            "torch": torch.__version__, "transformers": transformers.__version__}


# rectify's LoRA targets in the order it visits them (schemas::train::LoraTarget), and the stream
# its starting adapters are drawn from (trainer/src/lora.rs).
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_STREAM = 0x4C6F_5241_2D69_6E69
U64 = (1 << 64) - 1


def mix64(x):
    x = ((x ^ (x >> 30)) * 0xBF58_476D_1CE4_E5B9) & U64
    x = ((x ^ (x >> 27)) * 0x94D0_49BB_1331_11EB) & U64
    return x ^ (x >> 31)


def rectify_lora_a(np, shapes, seed):
    """rectify's starting `A` matrices (`trainer::lora::initial_adapters`), replayed: its
    splitmix64 stream from `mix64(seed ^ LORA_STREAM)`, 53 bits per value onto
    [-1/sqrt(in), 1/sqrt(in)), adapter after adapter in `shapes` order ([rank, in] each)."""
    total = sum(r * i for r, i in shapes)
    with np.errstate(over="ignore"):
        # splitmix64's n-th state is the start plus n times its increment, so the stream is computed at once.
        x = np.uint64(mix64(seed ^ LORA_STREAM)) + np.arange(1, total + 1, dtype=np.uint64) * np.uint64(0x9E37_79B9_7F4A_7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58_476D_1CE4_E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D0_49BB_1331_11EB)
        x = x ^ (x >> np.uint64(31))
    u = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    out, k = [], 0
    for r, i in shapes:
        out.append(((u[k:k + r * i] * 2.0 - 1.0) * (1.0 / math.sqrt(i))).astype(np.float32).reshape(r, i))
        k += r * i
    return out


def add_lora(torch, m, lora, dev):
    """LoRA as PEFT computes it, written out (PEFT is not on the GPU machines): each target
    projection gives `x Wᵀ + b + (alpha / rank) · (x Aᵀ) Bᵀ`, `B` starting at zero and `A` at
    rectify's own draw, so that both sides train the same adapters; every other weight frozen."""
    import numpy as np

    for p in m.parameters():
        p.requires_grad_(False)
    rank, scale = lora["rank"], lora["alpha"] / lora["rank"]
    layers = m.model.layers
    chosen = [(block, t) for block in layers for t in LORA_TARGETS if t in lora["targets"]]

    def parent(block, t):
        return block.self_attn if hasattr(block.self_attn, t) else block.mlp

    a_init = rectify_lora_a(np, [(rank, getattr(parent(b, t), t).in_features) for b, t in chosen], lora["seed"])

    class Adapted(torch.nn.Module):
        def __init__(self, base, a):
            super().__init__()
            self.base = base
            self.lora_A = torch.nn.Parameter(torch.from_numpy(a).to(dev))
            self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, rank, device=dev))

        def forward(self, x):
            return self.base(x) + (x @ self.lora_A.t()) @ self.lora_B.t() * scale

    for (block, t), a in zip(chosen, a_init):
        setattr(parent(block, t), t, Adapted(getattr(parent(block, t), t), a))


def w_generate(torch, dev, a):
    """transformers' `generate`, greedy, every sequence exactly `new_tokens` long, left-padded
    prompts: the work rectify's bench does. Greedy rather than sampling: on random weights every
    logit is within reach of the maximum, so a sampler would sort the whole vocabulary for every
    token, a cost that real models' peaked logits do not have."""
    m = load_model(torch, dev, a["model"])
    m.eval()
    prompts = [json.loads(l) for l in open(a["prompts"]) if l.strip()]
    runs = []
    for b in a["batches"]:
        ps = [prompts[i % len(prompts)] for i in range(b)]
        L = max(len(p) for p in ps)
        ids = torch.tensor([[0] * (L - len(p)) + p for p in ps], device=dev)
        att = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in ps], device=dev)
        for run in range(2):
            sync(torch, dev)
            t = time.time()
            with torch.no_grad():
                out = m.generate(input_ids=ids, attention_mask=att, do_sample=False, max_new_tokens=a["new_tokens"],
                                 min_new_tokens=a["new_tokens"], pad_token_id=0)
            sync(torch, dev)
            secs = time.time() - t
            new = (out.shape[1] - L) * b
            runs.append({"batch": b, "run": run, "new_tokens": new, "seconds": secs, "tokens_per_second": new / secs})
    return {"runs": runs}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
