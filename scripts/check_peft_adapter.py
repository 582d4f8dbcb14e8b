#!/usr/bin/env python3
"""Does PEFT read a LoRA run's adapters as rectify trained them? Loads the base model (a Hugging
Face folder; `trainer export` writes one from a GGUF) with RUN/final/adapter through
`PeftModel.from_pretrained`, and compares its log-probabilities with those of RUN/final (the
merged weights, through transformers) on one sentence, over the whole vocabulary.

    python scripts/check_peft_adapter.py BASE_HF_DIR RUN_DIR     # needs torch, transformers, peft
"""
import sys

import peft
import torch
import transformers

TOLERANCE = 5e-4  # nats; float32 sums in another order, merged against unmerged


def compare(base_dir, adapter_dir, merged_dir, what):
    """Max |d log p| between PEFT's adapter on the base and the merged folder, over one sentence
    and the whole vocabulary; exits FAILED where it passes TOLERANCE or the adapter moved nothing."""
    tok = transformers.AutoTokenizer.from_pretrained(merged_dir)
    ids = tok("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
              return_tensors="pt").input_ids
    with torch.no_grad():
        merged = transformers.AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
        base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        lp_base = torch.log_softmax(base(ids).logits, -1)
        adapted = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
        lp_adapted = torch.log_softmax(adapted(ids).logits, -1)
        lp_merged = torch.log_softmax(merged(ids).logits, -1)
    gap, moved = (lp_adapted - lp_merged).abs().max().item(), (lp_base - lp_merged).abs().max().item()
    print(f"{ids.shape[1]} tokens: {what}: max |d log p| {gap:.2e} nats; the base model vs the merged one: {moved:.2f}")
    if gap > TOLERANCE or moved <= 10 * TOLERANCE:
        sys.exit("FAILED: " + ("the merged model differs from PEFT's adapter" if gap > TOLERANCE else "the adapter changed nothing"))


def main():
    base_dir, run = sys.argv[1], sys.argv[2]
    compare(base_dir, run + "/final/adapter", run + "/final", "PEFT's adapter on the base vs rectify's merged final/")


if __name__ == "__main__":
    main()
