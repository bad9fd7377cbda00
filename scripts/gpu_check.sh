#!/usr/bin/env bash
# GPU check for one H100 with no network, about 6 minutes: the GPU-marked tests, the steering/capture overhead
# benchmark in bf16 on CUDA (60M and LLaVA-1.5-7B shapes), and a Stage II benchmark on a random model with
# LLaVA-1.5-7B's shapes in bf16.
# The device image (Python 3.12) has torch and an older transformers but not nnsight; on a machine with PyPI:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 -d .whl nnsight==0.8.1 transformers==5.24.0 \
#     greenlet pydantic pydantic_core annotated_types typing_inspection websocket-client zstandard \
#     alt-profanity-check==1.9.1 scikit-learn==1.9.1
# and carry .whl/ (ignored by git) to the GPU machine.
# Each step has its own timeout and a failure does not stop the next one; everything is logged to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tail -3
  export PYTHONPATH=/tmp/site:.
else
  export PYTHONPATH=.
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
step() {  # step NAME SECONDS COMMAND...: run one check, log it, say how it ended
  local name=$1 limit=$2; shift 2
  echo "=== $name"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, nnsight; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'nnsight', nnsight.__version__, 'cuda', torch.cuda.is_available())"
step gpu_tests 180 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py
step bench_core 120 python3 benchmarks/bench_core.py --device cuda --repeats 5
step bench_core_7b 180 python3 benchmarks/bench_core.py --device cuda --shape 7b --repeats 3
step bench_stage2_7b 300 python3 benchmarks/bench_stage2.py --shape 7b --steps 3
