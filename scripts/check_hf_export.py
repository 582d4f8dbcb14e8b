"""Check that an exported Hugging Face folder means what transformers would read it to mean.

Loads config.json + model.safetensors with numpy only and runs the forward pass exactly as
transformers' LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM define it (rotate_half RoPE,
GQA, SwiGLU, RMSNorm, Qwen3's RMSNorm over each query and key head, tied or untied head), independently of rectify's Rust code. Greedy-decodes the reference
prompts and compares with the reference ids.

usage: python check_hf_export.py EXPORT_DIR REFERENCE_JSON
"""
import json, sys
import numpy as np
from safetensors.numpy import load_file

export, reference = sys.argv[1], sys.argv[2]
cfg = json.load(open(f"{export}/config.json"))
w = load_file(f"{export}/model.safetensors")
assert cfg["architectures"][0] in ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"), cfg["architectures"]
H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
D = cfg["hidden_size"]
hd = cfg.get("head_dim") or D // H
# transformers 4 writes `rope_theta` and `rope_scaling`; transformers 5 one `rope_parameters`.
rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta") or rope.get("rope_theta", 10000.0)
assert rope.get("rope_type", rope.get("type", "default")) == "default", f"RoPE scaling {rope} is not written out here"
head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]

def rms(x, g):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

def rope(x, pos):  # x: [heads, T, hd], transformers' rotate_half convention
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = np.outer(pos, inv)
    emb = np.concatenate([ang, ang], -1)
    rot = np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], -1)
    return x * np.cos(emb) + rot * np.sin(emb)

def lin(x, name):
    y = x @ w[f"{name}.weight"].T
    return y + w[f"{name}.bias"] if f"{name}.bias" in w else y

def forward(ids):
    T = len(ids)
    x = w["model.embed_tokens.weight"][ids].astype(np.float32)
    pos = np.arange(T)
    mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        h = rms(x, w[f"{p}.input_layernorm.weight"])
        q = lin(h, f"{p}.self_attn.q_proj").reshape(T, H, hd).transpose(1, 0, 2)
        k = lin(h, f"{p}.self_attn.k_proj").reshape(T, KV, hd).transpose(1, 0, 2)
        v = lin(h, f"{p}.self_attn.v_proj").reshape(T, KV, hd).transpose(1, 0, 2)
        if f"{p}.self_attn.q_norm.weight" in w:  # Qwen3: per head, before the rotation
            q, k = rms(q, w[f"{p}.self_attn.q_norm.weight"]), rms(k, w[f"{p}.self_attn.k_norm.weight"])
        q, k = rope(q, pos), rope(k, pos)
        k, v = np.repeat(k, H // KV, 0), np.repeat(v, H // KV, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        x = x + lin(a.transpose(1, 0, 2).reshape(T, H * hd), f"{p}.self_attn.o_proj")
        h = rms(x, w[f"{p}.post_attention_layernorm.weight"])
        g = lin(h, f"{p}.mlp.gate_proj")
        x = x + lin(g / (1 + np.exp(-g)) * lin(h, f"{p}.mlp.up_proj"), f"{p}.mlp.down_proj")
    return rms(x, w["model.norm.weight"]) @ head.T

eos = cfg.get("eos_token_id")
stop = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
ok = True
for case in json.load(open(reference))["cases"]:
    ids = list(case["prompt_ids"])
    out = []
    for step in range(len(case["greedy_ids"])):
        logits = forward(ids)[-1]
        if step == 0:
            worst = max(abs(float(logits[t]) - l) for t, _, l in case["first_step_top5"])
        nxt = int(logits.argmax())
        out.append(nxt)
        ids.append(nxt)
        if nxt in stop:
            break
    same = out == case["greedy_ids"]
    ok &= same
    print(f"{case['greedy_text'][:40]!r}: greedy ids {'match' if same else 'DIFFER'}; first-step top-5 logits within {worst:.4f}")
sys.exit(0 if ok else 1)
