#!/usr/bin/env bash
# On a GPU machine (device `run`, with build-gpu-bundle carried): the CUDA test suite, compute-sanitizer
# (memcheck and racecheck) over it at small sizes, and the GPU benchmarks against cuBLAS, copy bandwidth and
# PyTorch. Everything is written under $OUT (default ./gpu-out):
#   cuda-tests.log, memcheck.log, racecheck.log, <gpu>-<date>.md (+ raw JSON)
#   bash scripts/gpu_check.sh [tests|sanitizer|bench|all]    (default all)
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/gpu-out}
what=${1:-all}
mkdir -p "$OUT" /tmp/moon-gpu
tar -C /tmp/moon-gpu -xJf "$ROOT/build-gpu-bundle/moon-gpu.tar.xz"
export LD_LIBRARY_PATH=/tmp/moon-gpu/lib:${LD_LIBRARY_PATH:-}
B=/tmp/moon-gpu
# cuBLAS 13 and the CUDA runtime: the toolkit's, else the ones PyTorch's wheels bring
if ldd "$B/moon_tests" | grep -q "not found"; then
  for lib in libcublasLt.so.13 libcudart.so.13; do
    dir=$(find /usr/local/cuda*/ /opt /usr/lib -name "$lib" -printf '%h\n' 2>/dev/null | head -1)
    [[ -n $dir ]] && export LD_LIBRARY_PATH=$dir:$LD_LIBRARY_PATH
  done
fi
if ldd "$B/moon_tests" | grep "not found"; then echo "gpu_check.sh: shared libraries missing (above)" >&2; exit 2; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9_.-')
rc=0
if [[ $what == all || $what == tests ]]; then
  MOON_TESTS_NEED_CUDA=1 "$B/moon_tests" --test-suite=cuda 2>&1 | tee "$OUT/cuda-tests.log" | tail -40
  (( ${PIPESTATUS[0]} == 0 )) || rc=1
fi
if [[ $what == all || $what == sanitizer ]]; then
  for tool in memcheck racecheck; do
    MOON_CUDA_TEST_SIZES=3,17 compute-sanitizer --tool "$tool" --error-exitcode 9 \
      "$B/moon_tests" --test-suite=cuda 2>&1 | tee "$OUT/$tool.log" | tail -15
    (( ${PIPESTATUS[0]} == 0 )) || rc=1
  done
fi
if [[ $what == all || $what == bench ]]; then
  python3 "$ROOT/scripts/bench_gpu_report.py" --bench "$B/moon_bench" --repetitions 5 \
    --out "$OUT/$gpu-$(date +%F).md" | tail -60
fi
exit $rc
