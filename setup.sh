#!/usr/bin/env bash
# One-step setup: a virtual environment in .venv with torch, bertkit (editable) and the test tools.
#   bash setup.sh            # CPU build of torch (torch==2.13.0 is the CPU build on this project's machines)
#   TORCH_SPEC="torch" bash setup.sh   # on a GPU machine: the CUDA build your index serves
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv .venv
# torch first and pinned, so that no dependency can pull a multi-GB CUDA build onto a CPU machine.
.venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[test]"
# tcmalloc: bertkit's command and benchmarks preload it (src/bertkit/allocator.py), since glibc's malloc
# fragments under training's ever-changing tensor sizes. From Debian, when this user may install it.
if ! ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal.so.4; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq --no-install-recommends libtcmalloc-minimal4 >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends libtcmalloc-minimal4 >/dev/null 2>&1; } \
      || echo "note: libtcmalloc-minimal4 did not install; bertkit will run on glibc's malloc (training slows as it runs)"
  else
    echo "note: install libtcmalloc-minimal4 (or libjemalloc2) for faster CPU training; bertkit preloads it when present"
  fi
fi
.venv/bin/python -c "import torch, bertkit; print(f'bertkit {bertkit.__version__} with torch {torch.__version__} ready in .venv')"
