// libFuzzer target: the SVG metadata scanner (RDF title, description, keywords, XML entities).
#include "fuzz/fuzz_common.h"
#include "io/svg_metadata.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return moon_fuzz_run([&] { moon::io::parse_svg_metadata(moon_fuzz_text(data, size), "fuzz.svg"); });
}
