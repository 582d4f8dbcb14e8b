#!/usr/bin/env python3
"""GGUF files that llama.cpp's own converter (`convert_hf_to_gguf.py`) writes from the tiny
checkpoints transformers 5 saved (model/tests/fixtures/transformers5/), for model/tests/
transformers5.rs: rectify must read them to transformers' log-probabilities too. That covers what
the converter does and rectify must undo: Q/K row permutation (llama), llama3 RoPE scaling as
`rope_freqs.weight`, GGUF tensor names of every architecture, q/k/v biases and an untied head
(qwen2), q/k norms and heads wider than hidden_size / heads (qwen3). Writes
model/tests/fixtures/llama-cpp-gguf/{llama3-tied,qwen2-untied,qwen3-tied}.gguf (committed).

    python scripts/llama_cpp_gguf_fixtures.py LLAMA_CPP_DIR TOKENIZER_JSON

LLAMA_CPP_DIR: llama.cpp's sources, e.g. `vendor/llama.cpp` of the PyPI sdist
llama_cpp_python-0.3.36.tar.gz; its gguf-py is used. Needs torch, transformers, sentencepiece.
TOKENIZER_JSON: the checkpoints' vocabulary is SmolLM2's, whose tokenizer the converter needs:
snapshots/default-unscored/tokenizer.json after `make data`.

The converter only accepts tokenizers it knows by a hash of their output; for the qwen classes it
does not recognise SmolLM2's, so its pre-tokenizer name is given ("smollm", what it finds for the
llama class). The vocabulary is then dropped from the files (they are test weights; the tokenizer
is tested elsewhere), keeping `<arch>.vocab_size`, so each file is ~1.6 MB.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
NAMES = ["llama3-tied", "qwen2-untied", "qwen3-tied"]
DROP = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")

CONVERT = r"""
import sys
sys.argv = sys.argv[1:]  # [converter, its arguments...]
import conversion.base as base
known = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        return "smollm"
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
import runpy
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def strip_vocab(src, dst, gguf):
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name in DROP or name == "general.architecture":
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), vtype, sub_type=sub)
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_shape=list(reversed([int(d) for d in t.shape])), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    llama_cpp, tokenizer = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.path.join(llama_cpp, "gguf-py"))
    import gguf

    out_dir = os.path.join(REPO, "model", "tests", "fixtures", "llama-cpp-gguf")
    os.makedirs(out_dir, exist_ok=True)
    for name in NAMES:
        with tempfile.TemporaryDirectory() as tmp:
            folder = os.path.join(tmp, name)
            src = os.path.join(REPO, "model", "tests", "fixtures", "transformers5", name)
            os.makedirs(folder)
            for f in ("config.json", "model.safetensors"):
                shutil.copy(os.path.join(src, f), folder)
            shutil.copy(tokenizer, os.path.join(folder, "tokenizer.json"))
            with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
                json.dump({"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}, f)
            full = os.path.join(tmp, name + ".gguf")
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([llama_cpp, os.path.join(llama_cpp, "gguf-py")]))
            subprocess.run([sys.executable, "-c", CONVERT, os.path.join(llama_cpp, "convert_hf_to_gguf.py"), folder,
                            "--outtype", "f16", "--outfile", full], check=True, env=env, cwd=llama_cpp)
            dst = os.path.join(out_dir, name + ".gguf")
            strip_vocab(full, dst + ".tmp", gguf)
            os.replace(dst + ".tmp", dst)
            kinds = sorted({t.tensor_type.name for t in gguf.GGUFReader(dst).tensors})
            print(f"wrote {os.path.relpath(dst, REPO)} ({os.path.getsize(dst)} bytes; tensors {kinds})")


if __name__ == "__main__":
    main()
