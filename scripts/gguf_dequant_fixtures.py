#!/usr/bin/env python3
"""Reference dequantisation of every ggml type rectify reads, from the `gguf` Python package's
numpy code (`gguf.quants.dequantize`), for `model-files/src/gguf.rs`'s block-by-block test.
Run once with `gguf` installed; writes model-files/tests/fixtures/gguf_dequant.json (committed,
so the test needs no Python).

    pip install gguf==0.19.0 numpy && python scripts/gguf_dequant_fixtures.py

Blocks are random bytes, so every bit of every field is exercised; only the f16 scale fields are
drawn as finite values of a realistic size (random bytes would give inf and NaN scales, which no
quantiser writes). Float types are random finite values.
"""
import importlib.metadata
import json
import os

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

# Type -> byte offsets of its f16 scale fields within one block (from ggml's block structs).
SCALE_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
FLOATS = {"F32": np.float32, "F16": np.float16}
BLOCKS = 12


def blocks_for(name, rng):
    qtype = T[name]
    elems, nbytes = GGML_QUANT_SIZES[qtype]
    if name in FLOATS:
        values = rng.normal(0, 2, size=BLOCKS * 8).astype(FLOATS[name])
        return values.view(np.uint8), values.size
    if name == "BF16":
        # The top half of random f32s: every bf16 bit pattern that is finite.
        bits = (rng.normal(0, 2, size=BLOCKS * 8).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return bits.view(np.uint8), bits.size
    raw = rng.integers(0, 256, size=(BLOCKS, nbytes), dtype=np.uint8)
    for off in SCALE_FIELDS[name]:
        # Scales of either sign: quantisers write negative d for some blocks (Q4_0, Q8_0).
        scale = (rng.uniform(1e-3, 0.1, size=BLOCKS) * rng.choice([-1, 1], size=BLOCKS)).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(BLOCKS, 2)
    return raw.reshape(-1), BLOCKS * elems


def main():
    rng = np.random.default_rng(20261202)
    out = {"gguf_version": importlib.metadata.version("gguf"), "types": {}}
    for name in ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]:
        raw, n = blocks_for(name, rng)
        values = gguf.quants.dequantize(raw, T[name]).reshape(-1).astype(np.float32)
        assert values.size == n and np.isfinite(values).all(), name
        out["types"][name] = {"id": int(T[name]), "n": n, "bytes_hex": raw.tobytes().hex(), "values": [float(v) for v in values]}
    path = os.path.join(os.path.dirname(__file__), "..", "model-files", "tests", "fixtures", "gguf_dequant.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, path)
    sizes = ", ".join(f"{k} ({v['n']} values)" for k, v in out["types"].items())
    print(f"wrote {os.path.normpath(path)} with gguf {out['gguf_version']}: {sizes}")


if __name__ == "__main__":
    main()
