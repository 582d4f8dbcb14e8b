#!/usr/bin/env python3
"""Reference rotary inverse frequencies from transformers' own `ROPE_INIT_FUNCTIONS`, for
`model-files/src/rope.rs`'s test. Run once with transformers installed; writes
model-files/tests/fixtures/rope_inv_freq.json (committed, so the test needs no Python).

    python scripts/rope_reference.py
"""
import json
import os

import transformers
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

HEAD_DIM = 64
CASES = [
    ("llama3.2-1b", 500000.0, {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192}),
    ("llama3.1-8b", 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192}),
    ("llama3-small-context", 10000.0, {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 2.0, "high_freq_factor": 8.0,
                                       "original_max_position_embeddings": 256}),
    ("linear-2", 10000.0, {"rope_type": "linear", "factor": 2.0}),
    ("linear-4-qwen-base", 1000000.0, {"rope_type": "linear", "factor": 4.0}),
]


def main():
    out = []
    for name, theta, scaling in CASES:
        cfg = LlamaConfig(hidden_size=HEAD_DIM * 4, num_attention_heads=4, head_dim=HEAD_DIM, max_position_embeddings=32768,
                          rope_parameters={"rope_theta": theta, **scaling})
        inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](cfg, "cpu")
        assert attention_factor == 1.0
        out.append({"name": name, "rope_theta": theta, "head_dim": HEAD_DIM,
                    "extra": {"rope_parameters": {"rope_theta": theta, **scaling}},
                    "inv_freq": [float(x) for x in inv_freq.tolist()]})
    path = os.path.join(os.path.dirname(__file__), "..", "model-files", "tests", "fixtures", "rope_inv_freq.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {len(out)} cases to {os.path.normpath(path)} (transformers {transformers.__version__})")


if __name__ == "__main__":
    main()
