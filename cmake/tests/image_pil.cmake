# ctest entries for the suite `image_pil`: scripts/pil_reference.py (Debian's /usr/bin/python3 with PIL) writes
# PIL's decode, resize, crop and CLIP-preprocess results for real images (openclipart-png, Fashion-MNIST, one
# JPEG) into ${CMAKE_BINARY_DIR}/pil_ref; the suite compares moon's against them. Not under the sanitizers.
list(APPEND MOON_SPECIAL_SUITES image_pil)
if(NOT MOON_SANITIZE)
  set(MOON_PIL_REF_DIR "${CMAKE_BINARY_DIR}/pil_ref")
  add_test(NAME image_pil_data
           COMMAND ${MOON_TORCH_PYTHON} ${CMAKE_SOURCE_DIR}/scripts/pil_reference.py --out ${MOON_PIL_REF_DIR})
  set_tests_properties(image_pil_data PROPERTIES FIXTURES_SETUP pil_ref LABELS "parity" TIMEOUT 300)
  add_test(NAME image_pil COMMAND moon_tests --test-suite=image_pil --no-intro=true)
  set_tests_properties(image_pil PROPERTIES FIXTURES_REQUIRED pil_ref LABELS "parity" TIMEOUT 600
                       ENVIRONMENT "OMP_NUM_THREADS=2;MOON_PIL_REF=${MOON_PIL_REF_DIR}")
endif()
