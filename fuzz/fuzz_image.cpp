// libFuzzer target: image decoding (PNG, JPEG, BMP through stb_image and our checks), grey and colour.
#include "fuzz/fuzz_common.h"
#include "io/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return moon_fuzz_run([&] {
    const moon::io::Image rgb = moon::io::decode_image(data, size, "fuzz.img", 3);
    if (!rgb.empty()) moon::io::convert_channels(rgb, 1);
  });
}
