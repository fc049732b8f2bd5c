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
.venv/bin/python -c "import torch, bertkit; print(f'bertkit {bertkit.__version__} with torch {torch.__version__} ready in .venv')"
