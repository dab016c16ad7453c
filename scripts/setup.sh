#!/usr/bin/env bash
# Sets up a Debian 12 machine for moon and builds it. Idempotent: run it again at any time.
#
#   bash scripts/setup.sh               packages, then configure + build build/ (Release, Ninja, ccache;
#                                       the CUDA backend is on when nvcc is found)
#   bash scripts/setup.sh --no-build    packages only
#   bash scripts/setup.sh --sanitize    packages, then build-asan/ (ASan + UBSan, no CUDA, no benchmarks)
#   bash scripts/setup.sh --no-apt ...  skip the package step (offline machines that already have them)
#   bash scripts/setup.sh --force-apt   apt-get update + install even when every package is present
#
# Environment: MOON_BUILD_DIR (default build), MOON_ASAN_DIR (default build-asan), MOON_JOBS (default nproc),
# MOON_CMAKE_ARGS (extra configure arguments, e.g. "-DMOON_CUDA=OFF").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

build=1
sanitize=0
apt=1
force_apt=0
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --sanitize) sanitize=1 ;;
    --no-apt) apt=0 ;;
    --force-apt) force_apt=1 ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

# Build tools and libraries; PyTorch and PIL for the parity tests; the real data sets that the importers
# read (`moon data import`); npm (for the emoji data set and the GPT-2 tokenizer reference) unless a node
# installation is already on PATH.
PACKAGES=(build-essential cmake ninja-build ccache libdnnl-dev nlohmann-json3-dev doctest-dev libstb-dev zlib1g-dev
          libbenchmark-dev python3-torch python3-numpy python3-pil
          dataset-fashion-mnist openclipart-png openclipart-svg)
command -v npm >/dev/null || PACKAGES+=(npm)

# ---- packages
if [[ $apt == 1 ]]; then
  SUDO=""
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || { echo "setup.sh: not root and no sudo; install ${PACKAGES[*]} first, then rerun with --no-apt" >&2; exit 1; }
    SUDO=sudo
  fi
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [[ ${#missing[@]} -eq 0 && $force_apt == 0 ]]; then
    echo "setup.sh: all ${#PACKAGES[@]} packages are installed"
  else
    echo "setup.sh: installing ${missing[*]:-(all present; --force-apt)}"
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}"
  fi
fi

[[ $build == 1 ]] || exit 0

# ---- configure and build
# nvcc usually lives outside PATH; CMake's CUDA detection looks on PATH (and in CUDACXX).
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
JOBS=${MOON_JOBS:-$(nproc)}
# shellcheck disable=SC2206
EXTRA=(${MOON_CMAKE_ARGS:-})

if [[ $sanitize == 1 ]]; then
  DIR=${MOON_ASAN_DIR:-build-asan}
  cmake -S "$ROOT" -B "$DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOON_SANITIZE=ON -DMOON_BENCH=OFF \
        -DMOON_CUDA=OFF "${EXTRA[@]}"
else
  DIR=${MOON_BUILD_DIR:-build}
  cmake -S "$ROOT" -B "$DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "${EXTRA[@]}"
fi
cmake --build "$DIR" -j"$JOBS"
echo "setup.sh: built $DIR ($(grep -E '^MOON_(CUDA|SANITIZE|BENCH):' "$DIR/CMakeCache.txt" | tr '\n' ' '))"
