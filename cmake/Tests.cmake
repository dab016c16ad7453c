# ctest entries: one per doctest test suite of moon_tests, labelled so CI can pick subsets.
#   fast   : quick unit suites (also run under the sanitizers: ctest -L fast in build-asan)
#   slow   : long suites (the full registry sweep at every size and ISA)
#   train  : whole training runs on the tiny config (exact resume, NaN, SIGINT): release build only, since they
#            take minutes under the sanitizers; the training code's unit suites are fast
#   parity : comparisons with PyTorch (needs Debian's /usr/bin/python3 with python3-torch; not under ASan)
#
# Suites are found by scanning tests/*.cpp for TEST_SUITE("name"), so a new suite gets its ctest entry at
# the next configure (editing a test file re-runs configure). A suite not listed below is labelled fast.
set(MOON_SLOW_SUITES ops_sweep)
set(MOON_TRAIN_SUITES trainer_slow)
set(MOON_SPECIAL_SUITES parity)  # have their own entries below
set(MOON_TORCH_PYTHON /usr/bin/python3 CACHE FILEPATH "Python interpreter with torch (Debian's python3-torch)")

# Each cmake/tests/*.cmake adds the entries of suites that need a fixture (reference data written by a
# script, a downloaded package). It appends its suites to MOON_SPECIAL_SUITES (so the loop below skips
# them) and declares its add_test() entries. Labels: `parity` (compares with a reference tool), `data`
# (needs installed data packages). Neither runs under the sanitizers unless also labelled fast.
file(GLOB _moon_test_hooks CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/tests/*.cmake)
foreach(hook IN LISTS _moon_test_hooks)
  include(${hook})
endforeach()

function(moon_suite name labels)
  add_test(NAME ${name} COMMAND moon_tests --test-suite=${name} --no-intro=true)
  set_tests_properties(${name} PROPERTIES LABELS "${labels}" ENVIRONMENT "OMP_NUM_THREADS=2")
  if("slow" IN_LIST labels)
    set_tests_properties(${name} PROPERTIES TIMEOUT 1800)
  else()
    set_tests_properties(${name} PROPERTIES TIMEOUT 600)
  endif()
endfunction()

set(_moon_suites "")
foreach(src IN LISTS MOON_TEST_SOURCES)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${src}")
  file(STRINGS "${src}" _lines REGEX "TEST_SUITE\\( *\"[A-Za-z0-9_]+\" *\\)")
  foreach(line IN LISTS _lines)
    string(REGEX MATCH "TEST_SUITE\\( *\"([A-Za-z0-9_]+)\" *\\)" _m "${line}")
    list(APPEND _moon_suites "${CMAKE_MATCH_1}")
  endforeach()
endforeach()
list(REMOVE_DUPLICATES _moon_suites)
list(SORT _moon_suites)

foreach(suite IN LISTS _moon_suites)
  if(suite IN_LIST MOON_SPECIAL_SUITES)
    continue()
  elseif(suite IN_LIST MOON_SLOW_SUITES)
    moon_suite(${suite} "slow")
  elseif(suite IN_LIST MOON_TRAIN_SUITES)
    moon_suite(${suite} "train")
  else()
    moon_suite(${suite} "fast")
  endif()
endforeach()

# Test cases outside every suite above would otherwise never run under ctest: this entry runs them (none,
# normally; doctest then reports 0 test cases and passes).
string(REPLACE ";" "," _moon_suite_list "${_moon_suites}")
add_test(NAME unsuited COMMAND moon_tests --test-suite-exclude=${_moon_suite_list} --no-intro=true)
set_tests_properties(unsuited PROPERTIES LABELS "fast" ENVIRONMENT "OMP_NUM_THREADS=2" TIMEOUT 600)

# ---- PyTorch parity: the fixture writes parity.json with PyTorch, the test replays it through moon.
set(MOON_PARITY_JSON "${CMAKE_BINARY_DIR}/parity.json")
target_compile_definitions(moon_tests PRIVATE MOON_PARITY_DEFAULT_JSON="${MOON_PARITY_JSON}")
if("parity" IN_LIST _moon_suites AND NOT MOON_SANITIZE)
  add_test(NAME parity_data
           COMMAND ${MOON_TORCH_PYTHON} ${CMAKE_SOURCE_DIR}/scripts/torch_parity.py --out ${MOON_PARITY_JSON})
  set_tests_properties(parity_data PROPERTIES FIXTURES_SETUP parity_json LABELS "parity" TIMEOUT 300)
  add_test(NAME parity COMMAND moon_tests --test-suite=parity --no-intro=true)
  set_tests_properties(parity PROPERTIES FIXTURES_REQUIRED parity_json LABELS "parity" TIMEOUT 600
                       ENVIRONMENT "OMP_NUM_THREADS=2;MOON_PARITY_JSON=${MOON_PARITY_JSON}")
endif()

# ---- the binary: `moon selftest` walks the registry through the CLI (one size; the ops suite does more).
add_test(NAME selftest COMMAND moon selftest --sizes 3)
set_tests_properties(selftest PROPERTIES LABELS "fast" ENVIRONMENT "OMP_NUM_THREADS=2" TIMEOUT 600)

# ---- the multi-ISA build shares no out-of-line inline code between its AVX-512, AVX2 and generic copies
# (see scripts/check_isa_symbols.sh), so the generic path never runs an AVX-512 instruction.
add_test(NAME isa_symbols COMMAND bash ${CMAKE_SOURCE_DIR}/scripts/check_isa_symbols.sh ${CMAKE_BINARY_DIR})
set_tests_properties(isa_symbols PROPERTIES LABELS "fast" TIMEOUT 120)

# ---- the CUDA backend: op parity with the CPU, allocator, copies, RNG, determinism. Without a GPU (or a
# CUDA build) the runner prints "skipped: no CUDA device" and exits 77, which ctest counts as skipped.
if("cuda" IN_LIST _moon_suites)
  set_tests_properties(cuda PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT "OMP_NUM_THREADS=2;MOON_TESTS_NEED_CUDA=1")
endif()
