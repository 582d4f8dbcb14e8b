#!/usr/bin/env python3
"""Greedy decoding of a GGUF by rectify against llama.cpp's own, on prompts neither was tuned on.

Run by scripts/check_llama_cpp.sh (`make check-llama-cpp`), with a Python that has
llama-cpp-python. Quantises the default model with llama.cpp's quantiser (`llama_model_quantize`,
default Q4_K_M) unless --gguf is given, then for each prompt:
  - the chat-templated prompt: rectify's ids (`trainer generate --json`) must equal llama.cpp's
    tokenisation of rectify's rendered text (special tokens parsed);
  - greedy continuation: rectify's ids against llama.cpp's argmax ids, token by token. Where they
    part, llama.cpp's own logits say how close the two candidates were: llama.cpp multiplies
    quantised weights with 8-bit-quantised activations, rectify with f32 dequantised weights, so a
    near-tie can break either way. A divergence counts as a tie when llama.cpp's logit gap between
    its token and rectify's is under --tie (default 0.05); anything else fails the check.

usage: check_llama_cpp.py --trainer T --source SRC.gguf --out DIR [--gguf Q.gguf] [--ftype Q4_K_M]
                          [--new-tokens 64] [--tie 0.05]
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import time

import llama_cpp
import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def prompts():
    """GSM8K and MATH-500 test problems away from the start of each file (the reference greedy
    fixtures and the quick evaluation use the first ones), plus a code and a non-English prompt."""
    out = []
    with open(os.path.join(REPO, "datasets/raw/gsm8k/test.jsonl")) as f:
        lines = f.readlines()
    out += [json.loads(lines[i])["question"] for i in range(400, 406)]
    with open(os.path.join(REPO, "datasets/raw/math500/test.jsonl")) as f:
        lines = f.readlines()
    out += [json.loads(lines[i])["problem"] for i in range(250, 254)]
    out += ["Write a Python function that returns the n-th Fibonacci number.",
            "Explique en une phrase pourquoi le ciel est bleu."]
    return out


def quantise(src, dst, ftype):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True  # the source is itself quantised (Q4_1)
    params.nthread = os.cpu_count() or 1
    tmp = dst + ".tmp"
    rc = llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize {src} -> {ftype} failed with {rc}")
    os.replace(tmp, dst)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--gguf")
    ap.add_argument("--ftype", default="Q4_K_M")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--tie", type=float, default=0.05)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)

    gguf = a.gguf
    if gguf is None:
        gguf = os.path.join(a.out, os.path.basename(a.source).replace(".Q4_1.", f".{a.ftype}."))
        if not os.path.exists(gguf):
            t = time.time()
            quantise(a.source, gguf, a.ftype)
            print(f"llama.cpp quantised {a.source} to {a.ftype}: {gguf} ({os.path.getsize(gguf) / 2**20:.1f} MiB, {time.time() - t:.1f} s)")
    from gguf import GGUFReader  # noqa: E402  (only to report the types the file holds)
    types = {}
    for t in GGUFReader(gguf).tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    print(f"{gguf}: tensor types {dict(sorted(types.items()))}")

    llm = llama_cpp.Llama(model_path=gguf, n_ctx=2048, n_threads=os.cpu_count(), logits_all=True, verbose=False)
    eos = llm.token_eos()
    results, ok = [], True
    for k, prompt in enumerate(prompts()):
        mine = json.loads(subprocess.run([a.trainer, "generate", "--model", gguf, "--prompt", prompt, "--max-new-tokens",
                                          str(a.new_tokens), "--json"], check=True, capture_output=True, text=True).stdout)
        theirs_prompt = llm.tokenize(mine["prompt"].encode(), add_bos=False, special=True)
        same_prompt = theirs_prompt == mine["prompt_ids"]
        llm.reset()
        llm.eval(theirs_prompt)
        theirs, gaps = [], []
        for _ in range(a.new_tokens):
            logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            nxt = int(np.argmax(logits))
            theirs.append(nxt)
            gaps.append(logits)
            if nxt == eos:
                break
            llm.eval([nxt])
        n = min(len(theirs), len(mine["ids"]))
        first = next((i for i in range(n) if theirs[i] != mine["ids"][i]), None)
        if first is None and len(theirs) != len(mine["ids"]):
            first = n
        r = {"prompt": prompt[:60], "prompt_tokens": len(mine["prompt_ids"]), "prompt_ids_equal": same_prompt,
             "tokens": len(mine["ids"]), "first_divergence": first}
        if first is not None and first < n:
            lg = gaps[first]
            r["llama_cpp_gap_at_divergence"] = round(float(lg[theirs[first]] - lg[mine["ids"][first]]), 4)
            r["tie"] = r["llama_cpp_gap_at_divergence"] < a.tie
        verdict = same_prompt and (first is None or r.get("tie", False))
        ok &= verdict
        r["ok"] = verdict
        results.append(r)
        agree = "identical" if first is None else f"agree for {first} tokens, then llama.cpp gap {r.get('llama_cpp_gap_at_divergence')}"
        print(f"[{k:2}] prompt ids {'equal' if same_prompt else 'DIFFER'} ({r['prompt_tokens']}), {len(mine['ids'])} new tokens: {agree}"
              f"  {'ok' if verdict else 'FAIL'}  {prompt[:50]!r}")
    summary = {"gguf": gguf, "tensor_types": types, "llama_cpp_python": llama_cpp.__version__, "new_tokens": a.new_tokens,
               "tie": a.tie, "prompts": len(results), "identical": sum(r["first_divergence"] is None for r in results),
               "prompt_ids_equal": sum(r["prompt_ids_equal"] for r in results), "passed": ok, "results": results}
    with open(os.path.join(a.out, "llama_cpp_check.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"{summary['identical']}/{len(results)} greedy continuations identical to llama.cpp's, "
          f"{summary['prompt_ids_equal']}/{len(results)} prompt tokenisations equal: {'PASSED' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
