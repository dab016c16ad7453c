# Suite `model_import`: the PyTorch twin (scripts/moon_twin.py export-hf, torch 1.13) writes the Hugging Face
# layout of a moon checkpoint the test saves first; `moon import`'s library call must give back the
# bf16-rounded originals exactly. The C++ suite runs the twin itself (std::system), so there is no fixture
# step. Labelled `parity`; left out of sanitizer builds like the other parity entries (torch is slow there).
# The fast suites hf_import, model_checkpoint and model_embed need nothing from here.
list(APPEND MOON_SPECIAL_SUITES model_import)
if(NOT MOON_SANITIZE)
  add_test(NAME model_import COMMAND moon_tests --test-suite=model_import --no-intro=true)
  set_tests_properties(model_import PROPERTIES LABELS "parity" TIMEOUT 300
    ENVIRONMENT "OMP_NUM_THREADS=2;MOON_TWIN_PYTHON=${MOON_TORCH_PYTHON};MOON_TWIN_SCRIPT=${CMAKE_SOURCE_DIR}/scripts/moon_twin.py")
endif()
