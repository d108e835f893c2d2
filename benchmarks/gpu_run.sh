#!/usr/bin/env bash
# One device call: versions, the test suite on real CUDA, then the benchmark scripts named as arguments.
#   bash benchmarks/gpu_run.sh [bench_layer_norm.py bench_softmax.py ...]
# Logs and CSVs go to $OUT (or benchmarks/results).
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
python -c "import sys, torch, triton, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
date -u +%Y-%m-%dT%H:%MZ
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_TIMEOUT:-300}" python -m pytest -q ${PYTEST_X--x} -p no:cacheprovider ${TESTS:-tests} 2>&1 | tee "$out/pytest.log" | tail -25
fi
for b in "$@"; do
  echo "== $b"
  timeout "${BENCH_TIMEOUT:-240}" python "benchmarks/$b" --csv "$out/${b%.py}.csv" 2>&1 | tee "$out/${b%.py}.log" | tail -40
done
