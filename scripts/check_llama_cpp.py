#!/usr/bin/env python3
"""Greedy decoding of a GGUF by rectify against llama.cpp's own, on prompts neither was tuned on.

Run by scripts/check_llama_cpp.sh (`make check-llama-cpp`), with a Python that has
llama-cpp-python. Quantises the default model with llama.cpp's quantiser (`llama_model_quantize`,
default Q4_K_M), and has llama.cpp's quantiser dequantise that file again to all-F32. rectify
decodes the quantised file; llama.cpp decodes both:
  - the F32 file is llama.cpp's own dequantisation computed in f32, the same arithmetic rectify
    does: rectify's greedy ids must equal llama.cpp's (a divergence is accepted only at an exact
    tie, a logit gap under 1e-3 in llama.cpp's logits);
  - the quantised file is llama.cpp as users run it: its matrix products take 8-bit-quantised
    activations, and which kernel does a product (and so the order of its float sums) depends on
    how many tokens a call carries. llama.cpp decodes the quantised file twice, with the prompt
    in one call (as users run it) and one token per call, and the two are compared with each
    other as well as with rectify. How long each pair agrees, and the gap where it parts, is
    reported, not judged.
Each prompt is chat-templated by rectify (`trainer generate --json`); its ids must equal
llama.cpp's tokenisation of the same text (special tokens parsed).

usage: check_llama_cpp.py --trainer T --source SRC.gguf --out DIR [--ftype Q4_K_M] [--new-tokens 64]
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
    params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_ALL_F32" if ftype == "F32" else f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True  # the source is itself quantised
    params.nthread = os.cpu_count() or 1
    tmp = dst + ".tmp"
    rc = llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize {src} -> {ftype} failed with {rc}")
    os.replace(tmp, dst)


def tensor_types(path):
    from gguf import GGUFReader

    types = {}
    for t in GGUFReader(path).tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return dict(sorted(types.items()))


def llama_cpp_greedy(llm, prompt_ids, new_tokens, stepwise=False):
    """llama.cpp's greedy ids, and its logits before each; the prompt in one call, or one token
    per call when `stepwise`."""
    llm.reset()
    for part in ([[t] for t in prompt_ids] if stepwise else [prompt_ids]):
        llm.eval(part)
    ids, logits = [], []
    for _ in range(new_tokens):
        lg = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        nxt = int(np.argmax(lg))  # ties to the lowest id, as rectify's greedy
        ids.append(nxt)
        logits.append(lg)
        if nxt == llm.token_eos():
            break
        llm.eval([nxt])
    return ids, logits


def compare(mine, theirs, logits):
    """(first index where the ids part or None, llama.cpp's logit gap there)."""
    n = min(len(mine), len(theirs))
    first = next((i for i in range(n) if mine[i] != theirs[i]), None)
    if first is None:
        return (None, None) if len(mine) == len(theirs) else (n, None)
    return first, float(logits[first][theirs[first]] - logits[first][mine[first]])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ftype", default="Q4_K_M")
    ap.add_argument("--new-tokens", type=int, default=64)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    stem = os.path.basename(a.source).rsplit(".", 2)[0]
    files = {}
    for ftype, src in ((a.ftype, a.source), ("F32", None)):
        path = os.path.join(a.out, f"{stem}.{ftype}.gguf" if ftype == a.ftype else f"{stem}.{a.ftype}-as-F32.gguf")
        if not os.path.exists(path):
            t = time.time()
            quantise(src or files[a.ftype], path, ftype)
            print(f"llama.cpp quantiser: {src or files[a.ftype]} -> {ftype}: {path} ({os.path.getsize(path) / 2**20:.1f} MiB, {time.time() - t:.1f} s)")
        files[ftype] = path
    gguf = files[a.ftype]
    print(f"{gguf}: tensor types {tensor_types(gguf)}")

    llms = {k: llama_cpp.Llama(model_path=p, n_ctx=2048, n_threads=os.cpu_count(), logits_all=True, verbose=False) for k, p in files.items()}
    results, ok = [], True
    for k, prompt in enumerate(prompts()):
        mine = json.loads(subprocess.run([a.trainer, "generate", "--model", gguf, "--prompt", prompt, "--max-new-tokens",
                                          str(a.new_tokens), "--json"], check=True, capture_output=True, text=True).stdout)
        prompt_ids = llms[a.ftype].tokenize(mine["prompt"].encode(), add_bos=False, special=True)
        r = {"prompt": prompt[:60], "prompt_tokens": len(mine["prompt_ids"]), "prompt_ids_equal": prompt_ids == mine["prompt_ids"],
             "rectify_tokens": len(mine["ids"])}
        for key, llm in (("f32", llms["F32"]), ("native", llms[a.ftype])):
            theirs, logits = llama_cpp_greedy(llm, prompt_ids, a.new_tokens)
            first, gap = compare(mine["ids"], theirs, logits)
            r[key] = {"first_divergence": first, "gap": None if gap is None else round(gap, 5)}
            if key == "native":
                native, native_logits = theirs, logits
        # llama.cpp against itself: the same file, the prompt one token per call.
        stepwise, _ = llama_cpp_greedy(llms[a.ftype], prompt_ids, a.new_tokens, stepwise=True)
        first, gap = compare(stepwise, native, native_logits)
        r["llama_cpp_tokens"] = len(native)
        r["native_stepwise"] = {"first_divergence": first, "gap": None if gap is None else round(gap, 5)}
        verdict = r["prompt_ids_equal"] and (r["f32"]["first_divergence"] is None or (r["f32"]["gap"] is not None and r["f32"]["gap"] < 1e-3))
        ok &= verdict
        r["ok"] = verdict
        results.append(r)
        say = lambda d: "identical" if d["first_divergence"] is None else f"agree {d['first_divergence']}, gap {d['gap']}"
        print(f"[{k:2}] prompt ids {'equal' if r['prompt_ids_equal'] else 'DIFFER'} ({r['prompt_tokens']}), rectify {len(mine['ids'])} tokens;"
              f" vs llama.cpp F32: {say(r['f32'])}; vs llama.cpp {a.ftype}: {say(r['native'])};"
              f" llama.cpp {a.ftype} prompt token by token vs in one call: {say(r['native_stepwise'])}  {'ok' if verdict else 'FAIL'}",
              flush=True)
    count = lambda key: sum(r[key]["first_divergence"] is None for r in results)
    agreed = lambda key, length: round(sum(r[key]["first_divergence"] if r[key]["first_divergence"] is not None else length(r)
                                           for r in results) / len(results), 1)
    gaps = lambda key: max([r[key]["gap"] for r in results if r[key]["gap"] is not None], default=None)
    summary = {"gguf": gguf, "tensor_types": tensor_types(gguf), "llama_cpp_python": llama_cpp.__version__, "new_tokens": a.new_tokens,
               "prompts": len(results), "prompt_ids_equal": sum(r["prompt_ids_equal"] for r in results),
               "identical_to_llama_cpp_f32": count("f32"), "identical_to_llama_cpp_native": count("native"),
               "native_tokens_agreed_mean": agreed("native", lambda r: r["rectify_tokens"]),
               "native_gap_at_divergence_max": gaps("native"),
               "llama_cpp_stepwise_identical_to_native": count("native_stepwise"),
               "llama_cpp_stepwise_tokens_agreed_mean": agreed("native_stepwise", lambda r: r["llama_cpp_tokens"]),
               "llama_cpp_stepwise_gap_at_divergence_max": gaps("native_stepwise"),
               "passed": ok, "results": results}
    with open(os.path.join(a.out, "llama_cpp_check.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"{summary['prompt_ids_equal']}/{len(results)} prompt tokenisations equal; greedy ids identical to llama.cpp on its F32 "
          f"dequantisation {summary['identical_to_llama_cpp_f32']}/{len(results)}, on {a.ftype} itself "
          f"{summary['identical_to_llama_cpp_native']}/{len(results)} (mean {summary['native_tokens_agreed_mean']} tokens agreed; "
          f"largest llama.cpp logit gap at a parting {summary['native_gap_at_divergence_max']}); llama.cpp on {a.ftype} with the "
          f"prompt token by token against itself with the prompt in one call: {summary['llama_cpp_stepwise_identical_to_native']}/{len(results)} "
          f"identical (mean {summary['llama_cpp_stepwise_tokens_agreed_mean']} tokens agreed; largest gap at a parting "
          f"{summary['llama_cpp_stepwise_gap_at_divergence_max']}): {'PASSED' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
