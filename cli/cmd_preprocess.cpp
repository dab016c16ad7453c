// `moon preprocess IMAGE --size N [--filter ...] [--crop ...] [--norm ...] --out x.npy`: one image through
// the inference preprocess (decode, resize, crop, normalise) into a (3, N, N) float32 .npy file.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cli/commands.h"
#include "io/image.h"
#include "io/image_transform.h"
#include "io/npy.h"
#include "runtime/error.h"

namespace moon::cli {

namespace {

const char* kUsage =
    "usage: moon preprocess IMAGE --size N [--filter bicubic|bilinear|nearest] [--crop center|none]\n"
    "                         [--norm clip|siglip|imagenet|none] --out x.npy\n"
    "  Decodes IMAGE (JPEG, PNG or BMP; alpha composited on white), resizes it as PIL does and writes the\n"
    "  (3, N, N) float32 tensor to x.npy. --crop center: shorter side to N, then the centre N x N (CLIP);\n"
    "  --crop none: a direct N x N resize (SigLIP). Defaults: --filter bicubic --crop center --norm clip.\n"
    "  Prints the shape and the per-channel mean.\n";

}  // namespace

MOON_COMMAND(preprocess, 50, "decode, resize, crop and normalise one image into a (3, N, N) .npy")(const Args& args) {
  if (has_flag(args, "--help")) {
    std::printf("%s", kUsage);
    return 0;
  }
  check_flags("preprocess", args, {"--size", "--filter", "--crop", "--norm", "--out", "--help"});
  const auto inputs = positionals(args, {"--size", "--filter", "--crop", "--norm", "--out"});
  MOON_CHECK(inputs.size() == 1, "expected one IMAGE argument, got ", inputs.size(), " (try `moon preprocess --help`)");
  MOON_CHECK(has_flag(args, "--size"), "--size N is required (try `moon preprocess --help`)");
  const std::string out = flag_value(args, "--out", "");
  MOON_CHECK(!out.empty(), "--out x.npy is required (try `moon preprocess --help`)");

  io::PreprocessOptions options;
  options.size = static_cast<int>(unsigned_flag(args, "--size", 0, 1, 16384));
  options.filter = io::parse_resize_filter(flag_value(args, "--filter", "bicubic"));
  const std::string crop = flag_value(args, "--crop", "center");
  MOON_CHECK(crop == "center" || crop == "none", "--crop must be center or none, got '", crop, "'");
  options.center_crop = crop == "center";
  options.norm = io::parse_normalization(flag_value(args, "--norm", "clip"));

  const io::Image image = io::load_image(inputs[0], 3);
  const Tensor t = io::preprocess(image, options);
  io::save_npy(out, t);

  const float* d = t.data<float>();
  const size_t plane = static_cast<size_t>(options.size) * options.size;
  double mean[3] = {0, 0, 0};
  for (int c = 0; c < 3; ++c) {
    for (size_t i = 0; i < plane; ++i) mean[c] += d[c * plane + i];
    mean[c] /= double(plane);
  }
  std::printf("%s: %dx%d -> %s f32%s (filter %s, crop %s, norm %s)\n", inputs[0].c_str(), image.width, image.height,
              out.c_str(), t.shape_str().c_str(), io::resize_filter_name(options.filter), crop.c_str(),
              io::normalization_name(options.norm));
  std::printf("mean per channel: [%.6f, %.6f, %.6f]\n", mean[0], mean[1], mean[2]);
  return 0;
}

}  // namespace moon::cli
