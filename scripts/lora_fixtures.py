#!/usr/bin/env python3
"""LoRA fixtures for `trainer/tests/lora.rs`: adapters made and saved by PEFT itself on the
transformers 5 fixtures (`scripts/transformers_fixtures.py`), with PEFT's own log-probabilities
and DFT gradients, so that the Rust test checks rectify's LoRA against PEFT without Python.

    python scripts/lora_fixtures.py     # needs torch + transformers + peft (a cache venv will do)

    python scripts/lora_fixtures.py qwen3-tied-rslora   # only the cases named

Writes trainer/tests/fixtures/lora/<name>/ (CASES: the base fixture and PEFT settings of each):
  adapter/                  adapter_config.json and adapter_model.safetensors exactly as
                            `PeftModel.save_pretrained` writes them (rank 4, alpha 8, every
                            projection of both blocks; A as PEFT draws it, B random rather than
                            zero so that every gradient and log-probability is non-trivial)
  case.json                 one packed row of the base fixture (three examples and padding) with a
                            seeded loss mask; PEFT's log-probability of every token given the
                            earlier tokens of its own example (0.0 at each example's first), and
                            the DFT objective -(1/N) sum m_t sg(p_t) log p_t over the N trained
                            tokens, each example run alone, in float32
  grads.safetensors         the objective's gradient of every lora_A / lora_B (and DoRA magnitude), by the names
                            rectify uses (PEFT's without `base_model.model.` and `.default`)
"""
import json
import math
import os
import random
import sys

import peft
import safetensors.torch
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
BASES = os.path.join(HERE, "..", "model", "tests", "fixtures", "transformers5")
OUT = os.path.join(HERE, "..", "trainer", "tests", "fixtures", "lora")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Fixture name: (base fixture, PEFT settings beyond rank 4, alpha 8). rsLoRA scales by
# alpha / sqrt(r) = 4, not alpha / r = 2, so a rectify that ignored it would be far off. DoRA's
# magnitudes are moved off their starting row norms too, so that each one matters.
CASES = {
    "llama3-tied": ("llama3-tied", {}),
    "qwen2-untied": ("qwen2-untied", {}),
    "qwen3-tied-rslora": ("qwen3-tied", {"use_rslora": True}),
    "qwen2-untied-dora": ("qwen2-untied", {"use_dora": True}),
    "llama3-tied-dropout": ("llama3-tied", {"lora_dropout": 0.25}),
    "qwen2-untied-dora-dropout": ("qwen2-untied", {"use_dora": True, "lora_dropout": 0.25}),
}
# With lora_dropout, the objective and gradients are those of one training step whose dropout
# masks are rectify's (`model/src/dropout.rs`, reproduced below) for this seed and step, the
# packed row being the step's row 0; the log-probabilities are the adapted model's (no dropout).
DROPOUT_DRAW = {"seed": 5, "step": 1, "slot": 0}
M64 = (1 << 64) - 1
STREAM = 0x4C6F52412D64726F


def mix64(x):
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def dropout_mask(p, layer, target, seq, width):
    """rectify's mask of the input [seq, width] of `target` in block `layer`, for DROPOUT_DRAW."""
    d = DROPOUT_DRAW
    row = mix64(mix64(mix64(d["seed"] ^ STREAM) ^ d["step"]) ^ d["slot"])
    key = mix64(row ^ mix64((layer << 8) | TARGETS.index(target)))
    cut = math.ceil(p * 2**53)
    draws = [mix64((key + (i + 1) * 0x9E3779B97F4A7C15) & M64) >> 11 for i in range(seq * width)]
    return torch.tensor([1.0 / (1.0 - p) if u >= cut else 0.0 for u in draws], dtype=torch.float32).reshape(seq, width)


class MaskedDropout(torch.nn.Module):
    """Stands in for PEFT's nn.Dropout: drops by rectify's mask of the packed row, at the
    positions of the example running (`offset[0]` onward)."""

    def __init__(self, mask, offset):
        super().__init__()
        self.mask, self.offset = mask, offset

    def forward(self, x):
        if not self.training:  # as nn.Dropout: nothing outside training
            return x
        return x * self.mask[self.offset[0]:self.offset[0] + x.shape[1]]


def rectify_name(peft_name):
    # DoRA's magnitude is saved without `.weight`, and rectify names it so.
    name = peft_name.removeprefix("base_model.model.").replace(".default", "")
    return name.removesuffix(".weight") if name.endswith("lora_magnitude_vector.weight") else name


def main():
    for name in sys.argv[1:] or CASES:
        base_name, settings = CASES[name]
        torch.manual_seed(3)
        base = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(BASES, base_name), dtype=torch.float32,
                                                                 attn_implementation="eager")
        config = peft.LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": TARGETS, "lora_dropout": 0.0, "bias": "none",
                                    **settings})
        model = peft.get_peft_model(base, config)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0.0, 0.3)
                if "lora_magnitude_vector" in n:
                    p.mul_(1.0 + 0.2 * torch.randn_like(p))
        path = os.path.join(OUT, name)
        model.save_pretrained(os.path.join(path, "adapter"))
        os.remove(os.path.join(path, "adapter", "README.md"))  # a model card template
        # PEFT records the base's path as loaded (absolute here): the repository's, relative to its root.
        config_path = os.path.join(path, "adapter", "adapter_config.json")
        with open(config_path) as f:
            adapter_config = json.load(f)
        adapter_config["base_model_name_or_path"] = f"model/tests/fixtures/transformers5/{base_name}"
        with open(config_path, "w") as f:
            json.dump(adapter_config, f, indent=2, sort_keys=True)
            f.write("\n")
        # Reloaded from the saved files, so the figures are those of the adapter on disk.
        base = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(BASES, base_name), dtype=torch.float32,
                                                                 attn_implementation="eager")
        model = peft.PeftModel.from_pretrained(base, os.path.join(path, "adapter"), is_trainable=True)
        model.train()

        with open(os.path.join(BASES, base_name, "logprobs.json")) as f:
            packed = json.load(f)["cases"][1]
        ids, seg = packed["input_ids"], packed["segment_ids"]
        p = settings.get("lora_dropout", 0.0)
        offset = [0]
        if p > 0:
            for module_name, module in model.named_modules():
                if module_name.endswith(".lora_dropout"):
                    parts = module_name.split(".")
                    layer, target = int(parts[parts.index("layers") + 1]), parts[-2]
                    width = model.get_submodule(module_name.removesuffix(".lora_dropout")).in_features
                    module["default"] = MaskedDropout(dropout_mask(p, layer, target, len(ids), width), offset)
        rng = random.Random(17)
        mask = [int(i > 0 and seg[i] != 0 and seg[i] == seg[i - 1] and rng.random() < 0.6) for i in range(len(ids))]
        n = sum(mask)
        logprobs, objective = [], 0.0
        total = torch.zeros(())
        for s in sorted(set(seg) - {0}):
            idx = [i for i in range(len(ids)) if seg[i] == s]
            offset[0] = idx[0]
            x = torch.tensor([[ids[i] for i in idx]])
            gather = lambda logits: torch.log_softmax(logits.float(), -1)[0, :-1].gather(1, x[0, 1:, None])[:, 0]
            lp = gather(model(input_ids=x).logits)
            m = torch.tensor([float(mask[i]) for i in idx[1:]])
            total = total + -(lp.detach().exp() * lp * m).sum() / n
            if p > 0:  # the adapted model's own log-probabilities: dropout is off outside training
                model.eval()
                with torch.no_grad():
                    lp = gather(model(input_ids=x).logits)
                model.train()
            logprobs += [0.0] + lp.tolist()
        logprobs += [0.0] * (len(ids) - len(logprobs))
        total.backward()
        grads = {rectify_name(k): p.grad.detach().contiguous() for k, p in model.named_parameters() if "lora_" in k}
        per_target = 3 if settings.get("use_dora") else 2
        assert len(grads) == per_target * len(TARGETS) * base.config.num_hidden_layers
        safetensors.torch.save_file(grads, os.path.join(path, "grads.safetensors"))
        with open(os.path.join(path, "case.json"), "w") as f:
            json.dump({"peft": peft.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
                       "input_ids": ids, "position_ids": packed["position_ids"], "segment_ids": seg, "loss_mask": mask,
                       "logprobs": logprobs, "objective": total.item(), **({"dropout": DROPOUT_DRAW} if p > 0 else {})}, f)
            f.write("\n")
        print(f"{name}: {n} trained tokens, objective {total.item():.6f}, {len(grads)} adapter gradients in {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
