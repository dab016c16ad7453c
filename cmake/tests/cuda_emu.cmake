# ctest entry `cuda_emu`: the CUDA kernels of ops/cuda/ run on the CPU, no GPU needed. scripts/cuda_emu.py
# converts the real ops/cuda/*.cu and runtime/cuda/kernel_util.* into host C++ in the build folder (launches
# become fiber-emulated launches, namespace moon::cuda becomes moon::cuda_emu so the copies never clash with
# the real kernels of a CUDA build); moon_cuda_emu (tests/cuda_emu/) compares them with the CPU kernels.
# Built in CUDA and CPU-only builds alike; not under the sanitizers (fibers and ASan do not mix). See
# tests/cuda_emu/README.md.
find_package(Python3 COMPONENTS Interpreter QUIET)
if(NOT MOON_SANITIZE AND NOT MOON_FUZZ AND Python3_Interpreter_FOUND)
  set(_emu_out "${CMAKE_BINARY_DIR}/cuda_emu")
  set(_emu_script "${CMAKE_SOURCE_DIR}/scripts/cuda_emu.py")
  file(GLOB _emu_inputs CONFIGURE_DEPENDS
       ${CMAKE_SOURCE_DIR}/ops/cuda/*.cu ${CMAKE_SOURCE_DIR}/ops/cuda/*.cuh ${CMAKE_SOURCE_DIR}/ops/cuda/*.h)
  list(APPEND _emu_inputs ${CMAKE_SOURCE_DIR}/runtime/cuda/kernel_util.cuh ${CMAKE_SOURCE_DIR}/runtime/cuda/kernel_util.cu)
  execute_process(COMMAND ${Python3_EXECUTABLE} ${_emu_script} ${CMAKE_SOURCE_DIR} ${_emu_out} --list
                  OUTPUT_VARIABLE _emu_generated OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _emu_rc)
  if(NOT _emu_rc EQUAL 0)
    message(FATAL_ERROR "scripts/cuda_emu.py --list failed")
  endif()
  string(REPLACE "\n" ";" _emu_generated "${_emu_generated}")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${_emu_script}")
  add_custom_command(
    OUTPUT ${_emu_generated}
    COMMAND ${Python3_EXECUTABLE} ${_emu_script} ${CMAKE_SOURCE_DIR} ${_emu_out}
    DEPENDS ${_emu_inputs} ${_emu_script}
    COMMENT "Converting the CUDA kernels for the CPU emulator (scripts/cuda_emu.py)"
    VERBATIM)

  file(GLOB _emu_harness CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/cuda_emu/*.cpp)
  add_executable(moon_cuda_emu ${_emu_harness} ${_emu_generated})
  target_include_directories(moon_cuda_emu PRIVATE ${CMAKE_SOURCE_DIR}/tests/cuda_emu ${_emu_out})
  target_link_libraries(moon_cuda_emu PRIVATE moon_core)
  # -O1: the emulator's cost is in the fiber switches, not the arithmetic; -O1 keeps the compile short.
  # No FMA contraction (the CUDA code's separate roundings, __fmul_rn/__fadd_rn, must stay separate), and
  # misaligned float4/uint4 accesses abort (the kernels' aligned() checks are part of what is tested).
  target_compile_options(moon_cuda_emu PRIVATE -O1 -g0 -ffp-contract=off -fsanitize=alignment
                         -fno-sanitize-recover=alignment)
  target_link_options(moon_cuda_emu PRIVATE -fsanitize=alignment)
  set_source_files_properties(${_emu_harness} PROPERTIES COMPILE_OPTIONS "${MOON_WARNINGS}")
  set_source_files_properties(${_emu_generated} PROPERTIES GENERATED TRUE COMPILE_OPTIONS "-w")

  add_test(NAME cuda_emu COMMAND moon_cuda_emu)
  set_tests_properties(cuda_emu PROPERTIES LABELS "fast" TIMEOUT 600 ENVIRONMENT "OMP_NUM_THREADS=2")
endif()
