#!/usr/bin/env python3
"""Conformance fixtures for `model/tests/transformers5.rs`: tiny random checkpoints made and saved
by transformers 5 itself, with transformers' own log-probabilities, so that the Rust test checks
rectify's forward against transformers without Python.

    python scripts/transformers_fixtures.py     # needs torch + transformers (a cache venv will do)

Writes model/tests/fixtures/transformers5/<name>/: config.json and model.safetensors exactly as
`save_pretrained` writes them (float16, to keep the files small; rectify reads f16), and
logprobs.json: for each case its input_ids, position_ids, segment_ids and transformers'
log-probability of every token given the earlier tokens of its own example (0.0 at each
example's first token), computed in float32 from the same f16 weights, each example run alone.

The two models, two layers each with grouped-query attention, a vocabulary as large as the
default snapshot's tokenizer (49152):
  llama3-tied   Llama, tied head, RoPE with llama3 scaling. original_max_position_embeddings is 64,
                so the 300-token case meets kept, blended and scaled frequencies.
  qwen2-untied  Qwen2, random q/k/v biases, untied head, rope_theta 1e6.
  qwen3-tied    Qwen3, random q/k norm weights, heads of 16 dimensions (explicit head_dim, twice
                hidden_size / num_attention_heads), tied head.
"""
import json
import os
import random
import sys

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_check import init_std, randomize_norms_and_biases  # noqa: E402  (one definition of the weights' draw)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "model", "tests", "fixtures", "transformers5")
VOCAB = 49152
MODELS = {
    "llama3-tied": transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        head_dim=8, max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64}),
    "qwen2-untied": transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=False, rope_parameters={"rope_type": "default",
                                                                                                    "rope_theta": 1000000.0}),
    "qwen3-tied": transformers.Qwen3Config(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
}


def logprobs_alone(model, ids):
    x = torch.tensor([ids])
    lp = torch.log_softmax(model(input_ids=x).logits.float(), -1)[0]
    return [0.0] + lp[:-1].gather(1, x[0, 1:, None])[:, 0].tolist()


def main():
    rng = random.Random(7)
    for name, config in MODELS.items():
        torch.manual_seed(11)
        # Logits spread, so a wrong rotation or mask shows (see gpu_check.init_std).
        config.initializer_range = init_std(config.hidden_size)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        randomize_norms_and_biases(torch, model)
        path = os.path.join(OUT, name)
        model.to(torch.float16).save_pretrained(path)
        os.remove(os.path.join(path, "generation_config.json"))
        # The reference runs in float32 on exactly the stored f16 weights.
        ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
        cases = []
        with torch.no_grad():
            ids = [rng.randrange(VOCAB) for _ in range(300)]
            cases.append({"name": "one sequence of 300 tokens", "input_ids": ids, "position_ids": list(range(300)),
                          "segment_ids": [1] * 300, "logprobs": logprobs_alone(ref, ids)})
            # A packed row: three examples, positions restarting at each, then padding.
            row, pos, seg, lps = [], [], [], []
            for k, n in enumerate((90, 150, 40)):
                ex = [rng.randrange(VOCAB) for _ in range(n)]
                row += ex
                pos += list(range(n))
                seg += [k + 1] * n
                lps += logprobs_alone(ref, ex)
            row += [0] * 8
            pos += [0] * 8
            seg += [0] * 8
            lps += [0.0] * 8
            cases.append({"name": "a packed row of three examples and padding", "input_ids": row, "position_ids": pos,
                          "segment_ids": seg, "logprobs": lps})
        with open(os.path.join(path, "logprobs.json"), "w") as f:
            json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "cases": cases}, f)
            f.write("\n")
        size = sum(os.path.getsize(os.path.join(path, x)) for x in os.listdir(path))
        print(f"{name}: {size / 1e6:.1f} MB in {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
