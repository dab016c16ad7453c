# ctest entries: one per doctest test suite, labelled so CI can pick subsets.
#   fast : quick unit suites (also run under the sanitizers)
#   slow : long suites (the full registry sweep at every size)
#   parity : comparisons with PyTorch (needs Debian's python3-torch)
function(moon_suite name labels)
  add_test(NAME ${name} COMMAND moon_tests --test-suite=${name} --no-intro=true)
  set_tests_properties(${name} PROPERTIES LABELS "${labels}" ENVIRONMENT "OMP_NUM_THREADS=2")
endfunction()

moon_suite(runtime "fast")
moon_suite(autograd "fast")
moon_suite(kernels "fast")
moon_suite(ops "fast")
moon_suite(ops_sweep "slow")
