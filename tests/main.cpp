// The doctest runner for every suite (one binary; ctest runs it once per suite, see cmake/Tests.cmake).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
