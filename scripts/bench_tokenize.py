"""Baseline for `make bench-data`: Python Hugging Face `tokenizers` batch-encodes the same texts
with the same tokenizer.json that the Rust pipeline uses (`encode_batch_fast`, as the Rust side),
and hashes the ids the same way."""
import hashlib, json, struct, sys, time
import tokenizers

tok_path, texts_path = sys.argv[1], sys.argv[2]
tok = tokenizers.Tokenizer.from_file(tok_path)
texts = [json.loads(line) for line in open(texts_path, encoding="utf-8")]
best, encs = float("inf"), None
for _ in range(3):
    t = time.perf_counter()
    # No offsets, as on the Rust side (`encode_batch` would compute character offsets too).
    encs = tok.encode_batch_fast(texts, add_special_tokens=False)
    best = min(best, time.perf_counter() - t)
h = hashlib.sha256()
tokens = 0
for e in encs:
    h.update(struct.pack(f"<{len(e.ids)}I", *e.ids))
    h.update(struct.pack("<I", 0xFFFFFFFF))
    tokens += len(e.ids)
print(json.dumps({
    "tokenizers_version": tokenizers.__version__,
    "texts": len(texts),
    "tokens": tokens,
    "python_encode_batch_fast_seconds": best,
    "python_encode_batch_fast_tokens_per_s": tokens / best,
    "ids_sha256": h.hexdigest(),
}, indent=1))
