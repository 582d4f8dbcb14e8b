#!/usr/bin/env python3
"""Does `trainer export --adapter` merge an adapter PEFT trained as PEFT computes it? Makes a
LoRA adapter with PEFT on the base model (a Hugging Face folder; `trainer export` writes one from
a GGUF) the way a TRL or LLaMA-Factory run leaves one: rank 8, alpha 16, on q_proj, v_proj and
down_proj, B random (a trained adapter's is not zero), saved in bfloat16. Then has rectify merge
it into the base and compares the merged folder's log-probabilities, through transformers, with
PEFT's adapted model on one sentence over the whole vocabulary.

    python scripts/check_peft_merge.py BASE_HF_DIR WORK_DIR [TRAINER] [--dora]   # needs torch, transformers >= 4.56, peft

WORK_DIR must be new or empty (the adapter and the merged model are written there). `--dora`
makes the adapter with DoRA and rsLoRA (`use_dora`, `use_rslora`), its magnitudes moved off
their start as B is.
"""
import os
import subprocess
import sys

import peft
from check_peft_adapter import compare
from safetensors import safe_open
import torch
import transformers


def main():
    dora = "--dora" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--dora"]
    base_dir, work = args[0], args[1]
    trainer = args[2] if len(args) > 2 else "target/release/trainer"
    adapter_dir, merged_dir = os.path.join(work, "adapter"), os.path.join(work, "merged")
    if os.path.isdir(work) and os.listdir(work):
        sys.exit(f"{work} is not empty: give a new folder")
    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16)
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.05,
                             use_dora=dora, use_rslora=dora)
    # PEFT keeps adapters in f32 on a bfloat16 model unless told not to (autocast_adapter_dtype).
    adapted = peft.get_peft_model(base, config, autocast_adapter_dtype=False)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            # rsLoRA's scale is alpha / sqrt(r) = 5.7 here, not 2: a smaller B moves the model
            # as far as the plain adapter's does.
            if "lora_B" in name:
                p.normal_(0.0, 0.005 if dora else 0.02)
            if "lora_magnitude_vector" in name:
                p.mul_(1.0 + 0.02 * torch.randn_like(p))
    adapted.save_pretrained(adapter_dir)
    # What the check claims: a bfloat16 file (a transformers that ignores `dtype=` loads f32).
    with safe_open(os.path.join(adapter_dir, "adapter_model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.bfloat16}, f"the adapter was saved as {dtypes}, not bfloat16"
    subprocess.run([trainer, "export", "--model", base_dir, "--adapter", adapter_dir, "--out", merged_dir], check=True)

    what = "PEFT's bfloat16 " + ("DoRA + rsLoRA adapter" if dora else "adapter")
    compare(base_dir, adapter_dir, merged_dir, what + " on the base vs rectify's merge")

if __name__ == "__main__":
    main()
