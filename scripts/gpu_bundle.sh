#!/usr/bin/env bash
# Builds the CUDA binaries here and packs them, with the shared libraries the GPU machine lacks (oneDNN,
# Google Benchmark), into build-gpu-bundle/moon-gpu.tar.xz: the one path to `carry` to a device machine,
# where scripts/gpu_check.sh unpacks and runs it. The GPU machine has the CUDA runtime, cuBLAS, PyTorch and
# compute-sanitizer; this machine has oneDNN. See docs/cuda.md, "Running on a GPU machine".
#   bash scripts/gpu_bundle.sh            # build-gpu/ (Release, MOON_CUDA=ON, benchmarks on), then the bundle
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${MOON_GPU_BUILD_DIR:-$ROOT/build-gpu}
OUTDIR=$ROOT/build-gpu-bundle
export PATH=/usr/local/cuda/bin:$PATH
command -v nvcc >/dev/null || { echo "gpu_bundle.sh: nvcc not found (install the CUDA toolkit)" >&2; exit 2; }
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOON_CUDA=ON -DMOON_BENCH=ON >/dev/null
cmake --build "$BUILD" -j"${MOON_JOBS:-2}" --target moon moon_tests moon_bench
rm -rf "$OUTDIR/stage" && mkdir -p "$OUTDIR/stage/lib"
cp "$BUILD/moon" "$BUILD/moon_tests" "$BUILD/moon_bench" "$OUTDIR/stage/"
strip --strip-debug "$OUTDIR/stage/"moon*
# the libraries that are not part of the CUDA toolkit or of a base image
for bin in moon moon_tests moon_bench; do
  ldd "$BUILD/$bin" | awk '/=> \//{print $3}' | grep -E 'libdnnl|libbenchmark|libgomp' || true
done | sort -u | while read -r lib; do cp -L "$lib" "$OUTDIR/stage/lib/"; done
tar -C "$OUTDIR/stage" -cJf "$OUTDIR/moon-gpu.tar.xz" .
rm -rf "$OUTDIR/stage"
ls -la "$OUTDIR/moon-gpu.tar.xz"
echo "gpu_bundle.sh: carry build-gpu-bundle to the device and run: bash scripts/gpu_check.sh"
