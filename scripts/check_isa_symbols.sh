#!/usr/bin/env bash
# Guards the multi-ISA build (cmake/MultiIsa.cmake). A kernel source compiled with -mavx512f must not emit
# an out-of-line copy of a shared inline function (a std:: template, a header helper): the linker keeps
# one copy of such weak symbols for the whole program, and if it keeps the AVX-512 one, the generic path
# would run AVX-512 instructions on a CPU without them. This lists the weak symbols of every avx512/avx2
# object that are not in its own moon::cpu::<isa> namespace and fails on any outside the allowlist.
# usage: scripts/check_isa_symbols.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: check_isa_symbols.sh BUILD_DIR}
allow='DW\.ref\.__gxx_personality_v0|moon::Error::~Error|typeinfo for moon::Error|typeinfo name for moon::Error|vtable for moon::Error'
objects=$(find "$build" -path '*isa/*_avx512.cpp.o' -o -path '*isa/*_avx2.cpp.o' | sort)
[ -n "$objects" ] || { echo "check_isa_symbols: no multi-ISA objects under $build"; exit 1; }
bad=0
for obj in $objects; do
  isa=avx512
  case "$obj" in *_avx2.cpp.o) isa=avx2 ;; esac
  leaks=$(nm -C --defined-only "$obj" | awk '$2 ~ /^[WVu]$/ { $1=""; $2=""; print substr($0, 3) }' |
          grep -v "moon::cpu::$isa::" | grep -Ev "^($allow)" || true)
  if [ -n "$leaks" ]; then
    echo "$obj shares inline symbols across ISA copies:"
    echo "$leaks" | sed 's/^/  /'
    bad=1
  fi
done
[ $bad -eq 0 ] && echo "check_isa_symbols: $(echo "$objects" | wc -l) objects clean"
exit $bad
