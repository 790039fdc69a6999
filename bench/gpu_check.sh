#!/usr/bin/env bash
# The CUDA arena's check on a GPU machine, in one go (under 8 minutes): the GPU tests, the CPU
# tests of the CUDA parts, and the GPU benchmark. Runs from the checkout with PYTHONPATH and
# installs nothing (the machine has torch, numpy, click, psutil, pytest, pytest-benchmark).
#   bench/gpu_check.sh OUTDIR     -> OUTDIR/{env.txt,tests.log,bench.log,bench.json,tables.md}
# Exits non-zero if any test or benchmark fails.
set -u
OUT=${1:?usage: bench/gpu_check.sh OUTDIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$(readlink -f "$0")")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
fail=0
"$PY" - > "$OUT/env.txt" 2>&1 <<'PYEOF' || fail=1
import torch, sys
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
print("devices", torch.cuda.device_count(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
assert torch.cuda.is_available(), "no CUDA device"
PYEOF
timeout 300 "$PY" -m pytest -q -rs -p no:cacheprovider tests/gpu/ \
    > "$OUT/tests.log" 2>&1 || fail=1
timeout 240 "$PY" -m pytest -q -p no:cacheprovider bench/test_cuda_gpu.py \
    --benchmark-json="$OUT/bench.json" > "$OUT/bench.log" 2>&1 || fail=1
(cd bench && "$PY" report.py "$OUT/bench.json") > "$OUT/tables.md" 2>&1 || true
tail -n 3 "$OUT/tests.log" "$OUT/bench.log"
echo "gpu_check: $([ $fail = 0 ] && echo ok || echo FAILED) (logs in $OUT)"
exit $fail
