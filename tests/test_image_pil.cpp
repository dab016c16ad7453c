// Suite `image_pil`: moon's decode, resize, centre crop and CLIP preprocess against PIL (Pillow 9.4) on real
// images. The fixture scripts/pil_reference.py writes the references and manifest.json into $MOON_PIL_REF
// (see cmake/tests/image_pil.cmake); the resize comparisons feed PIL's own RGB pixels to moon's resize, so
// they measure the resampler alone, while the decode and preprocess comparisons run moon end to end.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "io/image.h"
#include "io/image_transform.h"
#include "io/npy.h"
#include "io/resize.h"

using namespace moon;
using namespace moon::io;

namespace {

struct Diff {
  double mean = 0;
  int max = 0;
};

// A (H, W, 3) u8 .npy written by numpy, as an Image.
Image image_from_npy(const std::string& path) {
  const Tensor t = load_npy(path);
  REQUIRE_MESSAGE(t.dim() == 3, path, " is not (H, W, C)");
  REQUIRE(t.dtype() == DType::U8);
  Image im = make_image(int(t.size(1)), int(t.size(0)), int(t.size(2)));
  std::memcpy(im.pixels.data(), t.data<uint8_t>(), im.pixels.size());
  return im;
}

Diff diff(const Image& a, const Image& b) {
  REQUIRE(a.width == b.width);
  REQUIRE(a.height == b.height);
  REQUIRE(a.channels == b.channels);
  Diff d;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const int e = std::abs(int(a.pixels[i]) - int(b.pixels[i]));
    d.mean += e, d.max = std::max(d.max, e);
  }
  d.mean /= double(a.pixels.size());
  return d;
}

std::string reference_dir() {
  const char* env = std::getenv("MOON_PIL_REF");
  const std::string dir = env ? env : "";
  if (dir.empty() || !std::filesystem::exists(dir + "/manifest.json"))
    FAIL("no PIL reference data in MOON_PIL_REF='", dir, "': run it through ctest (ctest -R image_pil), or `",
         "/usr/bin/python3 scripts/pil_reference.py --out DIR` and set MOON_PIL_REF=DIR; if the script says data ",
         "packages are missing, run `bash scripts/setup.sh`");
  return dir;
}

}  // namespace

TEST_SUITE("image_pil") {
  TEST_CASE("decode, resize, crop and CLIP preprocess agree with PIL on real images") {
    const std::string dir = reference_dir();
    const auto manifest = nlohmann::json::parse(read_file_text(dir + "/manifest.json"));
    const auto& cases = manifest.at("cases");
    REQUIRE(cases.size() >= 15);

    double resize_sum = 0;
    size_t resize_n = 0, resize_pixels = 0;
    int resize_max = 0, decode_max_png = 0;
    double decode_jpeg_mean = 0, clip_max_png = 0, clip_mean_jpeg = 0, clip_max_jpeg = 0;
    for (const auto& c : cases) {
      const std::string name = c.at("name"), source = c.at("source"), kind = c.at("kind");
      CAPTURE(source);
      const Image pil_rgb = image_from_npy(dir + "/" + c.at("rgb").get<std::string>());

      // decode: lossless files must match exactly; the JPEG differs by decoder (stb_image vs libjpeg)
      const Image ours = load_image(source, 3);
      const Diff dd = diff(ours, pil_rgb);
      if (kind == "jpeg") {
        decode_jpeg_mean = dd.mean;
        MESSAGE("decode JPEG vs PIL (libjpeg): mean ", dd.mean, ", max ", dd.max);
        CHECK(dd.mean <= 1.5);
      } else {
        decode_max_png = std::max(decode_max_png, dd.max);
        CHECK_MESSAGE(dd.max == 0, name, " (", c.at("mode").get<std::string>(), ") decode differs: mean ", dd.mean,
                      " max ", dd.max);
      }

      // resize: PIL's own RGB through moon's resampler
      for (const auto& r : c.at("resizes")) {
        const ResizeFilter f = parse_resize_filter(r.at("filter"));
        const Image pil = image_from_npy(dir + "/" + r.at("file").get<std::string>());
        const Image mine = resize(pil_rgb, r.at("width"), r.at("height"), f);
        const Diff d = diff(mine, pil);
        // bit-exact: same weights, same 22-bit fixed point, same rounding as Pillow's 8-bit path
        CHECK_MESSAGE(d.max == 0, r.at("file").get<std::string>(), ": mean ", d.mean, " max ", d.max);
        resize_sum += d.mean * double(mine.pixels.size());
        resize_pixels += mine.pixels.size();
        resize_max = std::max(resize_max, d.max);
        ++resize_n;
      }

      // centre crop: exact
      const auto& cr = c.at("crop");
      const Image crop_pil = image_from_npy(dir + "/" + cr.at("file").get<std::string>());
      CHECK(diff(center_crop(pil_rgb, cr.at("height"), cr.at("width")), crop_pil).max == 0);

      // CLIP preprocess end to end from the file
      const Tensor ref = load_npy(dir + "/" + c.at("clip").get<std::string>());
      const Tensor got = preprocess(ours, {224, ResizeFilter::Bicubic, true, Normalization::Clip});
      REQUIRE(got.shape() == ref.shape());
      const float* a = got.data<float>();
      const float* b = ref.data<float>();
      double sum = 0, mx = 0;
      for (int64_t i = 0; i < got.numel(); ++i) {
        const double e = std::fabs(double(a[i]) - double(b[i]));
        sum += e, mx = std::max(mx, e);
      }
      const double mean = sum / double(got.numel());
      const double grey_level = 1.0 / 255.0 / 0.26130258;  // one u8 step after CLIP normalisation (largest)
      if (kind == "jpeg") {
        clip_mean_jpeg = mean, clip_max_jpeg = mx;
        CHECK_MESSAGE(mean <= 1.5 * grey_level, name, " CLIP preprocess mean ", mean);
      } else {
        clip_max_png = std::max(clip_max_png, mx);
        CHECK_MESSAGE(mx <= 1.01 * grey_level, name, " CLIP preprocess max ", mx);
        CHECK_MESSAGE(mean <= 1e-3, name, " CLIP preprocess mean ", mean);
      }
    }
    MESSAGE("PIL parity over ", cases.size(), " images: ", resize_n, " resizes, mean abs diff ",
            resize_sum / double(resize_pixels), ", max ", resize_max, "; lossless decode max diff ", decode_max_png,
            "; JPEG decode mean ", decode_jpeg_mean, "; CLIP tensor max diff (lossless) ", clip_max_png,
            ", JPEG mean ", clip_mean_jpeg, " max ", clip_max_jpeg);
  }
}
