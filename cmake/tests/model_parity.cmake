# model_parity: moon's C++ model against its PyTorch twin (scripts/moon_twin.py, torch 1.13 + numpy), tensor
# by tensor, for every switch combination (docs/parity.md). The C++ suite writes the weights and batches and runs
# the twin itself, so it needs no fixture entry. Skipped under the sanitizers (minutes of model runs there).
list(APPEND MOON_SPECIAL_SUITES model_parity)
if(NOT MOON_SANITIZE)
  add_test(NAME model_parity COMMAND moon_tests --test-suite=model_parity --no-intro=true)
  set_tests_properties(model_parity PROPERTIES LABELS "parity" TIMEOUT 600
    ENVIRONMENT "OMP_NUM_THREADS=2;MOON_TWIN_PYTHON=${MOON_TORCH_PYTHON};MOON_TWIN_SCRIPT=${CMAKE_SOURCE_DIR}/scripts/moon_twin.py;MOON_CONFIG_DIR=${CMAKE_SOURCE_DIR}/configs")
endif()
