#!/bin/bash
# The minimum torch of pyproject.toml (torch>=2.3), on the CPU: a venv with torch 2.3.1 from
# PyPI (the CUDA build; it runs on the CPU; ~3 GB with its nvidia-* wheels) and numpy < 2 (that
# torch is built against numpy 1), then the trainer's tests, the data-parallel test on the local
# executor and the device tests, against this checkout (PYTHONPATH, nothing installed).
#   bash tests/gpu/min_torch_check.sh [VENV]      # default VENV: /tmp/cluster-train-torch23
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${1:-/tmp/cluster-train-torch23}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q "torch==2.3.1" "numpy<2" "submitit>=1.5" "pyyaml>=6" "pytest>=7"
"$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'
cd "$repo"
PATH="$venv/bin:$PATH" PYTHONPATH="$repo" "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slurm" \
    tests/train tests/gpu/test_device.py tests/gpu/test_checkpoint_devices.py tests/ddp/test_ddp_local.py
