#!/usr/bin/env bash
# GPU check for one H100, no network, under 8 minutes: the GPU-marked tests and a Stage II benchmark on a
# random model with LLaVA-1.5-7B's shapes in bf16. The device image lacks nnsight/gradio/open_clip/detoxify:
# carry wheels in wheels/ (pip download -d wheels nnsight==0.8.1 ... on a machine with PyPI) and they install here.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d wheels ]; then pip install -q --no-index --find-links wheels nnsight gguf alt-profanity-check 2>&1 | tail -2; fi
export HF_HUB_OFFLINE=1 PYTHONPATH=.
nvidia-smi --query-gpu=name,memory.total --format=csv
timeout 240 python -m pytest -q -m gpu tests || echo "gpu tests failed"
timeout 300 python benchmarks/bench_stage2.py --shape 7b --steps 3
