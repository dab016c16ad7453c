# training_parity: moon's training losses (L_con with every part and gradient, GRPO's rewards, advantages and
# L_pg) against the PyTorch twin of docs/training.md (scripts/train_twin.py, torch 1.13 + numpy). The C++ suite
# writes the model, views and rollouts and runs the twin itself, so it needs no fixture entry. Beside it,
# training_twin_selfcheck checks the twin on its own (float64 finite differences, closed-form losses).
# Both skipped under the sanitizers (tens of seconds of model runs there, and torch).
list(APPEND MOON_SPECIAL_SUITES training_parity)
if(NOT MOON_SANITIZE)
  add_test(NAME training_parity COMMAND moon_tests --test-suite=training_parity --no-intro=true)
  set_tests_properties(training_parity PROPERTIES LABELS "parity" TIMEOUT 600
    ENVIRONMENT "OMP_NUM_THREADS=2;MOON_TRAIN_TWIN_PYTHON=${MOON_TORCH_PYTHON};MOON_TRAIN_TWIN_SCRIPT=${CMAKE_SOURCE_DIR}/scripts/train_twin.py;MOON_CONFIG_DIR=${CMAKE_SOURCE_DIR}/configs")
  add_test(NAME training_twin_selfcheck COMMAND ${MOON_TORCH_PYTHON} ${CMAKE_SOURCE_DIR}/scripts/train_twin.py selfcheck)
  set_tests_properties(training_twin_selfcheck PROPERTIES LABELS "parity" TIMEOUT 600 ENVIRONMENT "OMP_NUM_THREADS=1")
endif()
