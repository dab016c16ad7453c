# safetensors_python: scripts/safetensors_tool.py (numpy, torch) writes safetensors files that moon reads and
# checks the files moon writes; the C++ suite runs the script itself, so it needs no fixture entry.
list(APPEND MOON_SPECIAL_SUITES safetensors_python)
add_test(NAME safetensors_python COMMAND moon_tests --test-suite=safetensors_python --no-intro=true)
set_tests_properties(safetensors_python PROPERTIES LABELS "parity" TIMEOUT 300
  ENVIRONMENT "OMP_NUM_THREADS=2;MOON_SAFETENSORS_PYTHON=${MOON_TORCH_PYTHON};MOON_SAFETENSORS_TOOL=${CMAKE_SOURCE_DIR}/scripts/safetensors_tool.py")
