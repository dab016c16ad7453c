# Suite `importers`: runs the real importers (Debian dataset-fashion-mnist, openclipart-png/-svg, npm
# emoji-datasource-google, fetched into ${MOON_CACHE:-~/.cache/moon}/npm when missing) with small --limit
# values into a folder of the build tree. Labelled `data`: it needs the packages scripts/setup.sh installs,
# and npm with network the first time.
list(APPEND MOON_SPECIAL_SUITES importers)
add_test(NAME importers COMMAND moon_tests --test-suite=importers --no-intro=true)
set_tests_properties(importers PROPERTIES LABELS "data" TIMEOUT 600
                     ENVIRONMENT "OMP_NUM_THREADS=2;MOON_IMPORT_TEST_DIR=${CMAKE_BINARY_DIR}/importers-test")
