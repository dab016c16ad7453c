// Crops, resize recipes and normalisation into float (C, H, W) buffers (see image_transform.h).
#include "io/image_transform.h"

#include <algorithm>
#include <cstring>

#include "runtime/error.h"

namespace moon::io {

namespace {

// Python's round(m / 2) for an integer m >= 0: halves go to the even neighbour.
int half_round_even(int m) {
  const int k = m / 2;
  if (m % 2 == 0) return k;
  return (k % 2 == 0) ? k : k + 1;
}

// Start of a centred window of length `want` in an axis of length `have` (negative: padding before).
int centred_start(int have, int want) { return want > have ? -((want - have) / 2) : half_round_even(have - want); }

}  // namespace

Image crop(const Image& image, int top, int left, int height, int width) {
  MOON_CHECK(height > 0 && width > 0, "crop: size must be positive, got ", height, "x", width);
  Image out = make_image(width, height, image.channels);
  const int c = image.channels;
  // overlap of the window with the image, in output coordinates
  const int y0 = std::max(0, -top), y1 = std::min(height, image.height - top);
  const int x0 = std::max(0, -left), x1 = std::min(width, image.width - left);
  if (x1 <= x0) return out;
  for (int y = y0; y < y1; ++y)
    std::memcpy(out.row(y) + static_cast<size_t>(x0) * c, image.row(y + top) + static_cast<size_t>(x0 + left) * c,
                static_cast<size_t>(x1 - x0) * c);
  return out;
}

Image center_crop(const Image& image, int height, int width) {
  MOON_CHECK(!image.empty(), "center_crop: empty image");
  if (height == image.height && width == image.width) return image;
  return crop(image, centred_start(image.height, height), centred_start(image.width, width), height, width);
}

std::array<int, 2> shortest_side_size(int height, int width, int size) {
  MOON_CHECK(height > 0 && width > 0 && size > 0, "resize: sizes must be positive (image ", width, "x", height,
             ", target ", size, ")");
  const int64_t short_side = std::min(height, width), long_side = std::max(height, width);
  const int new_long = static_cast<int>(static_cast<double>(int64_t(size) * long_side) / double(short_side));
  return height <= width ? std::array<int, 2>{size, new_long} : std::array<int, 2>{new_long, size};
}

Image resize_shortest_center_crop(const Image& image, int size, ResizeFilter filter) {
  const auto [h, w] = shortest_side_size(image.height, image.width, size);
  return center_crop(resize(image, w, h, filter), size, size);
}

Image resize_square(const Image& image, int size, ResizeFilter filter) { return resize(image, size, size, filter); }

Normalization parse_normalization(const std::string& name) {
  if (name == "none") return Normalization::None;
  if (name == "clip") return Normalization::Clip;
  if (name == "siglip") return Normalization::Siglip;
  if (name == "imagenet") return Normalization::ImageNet;
  fail("unknown normalisation '", name, "'; expected clip, siglip, imagenet or none");
}

const char* normalization_name(Normalization norm) {
  switch (norm) {
    case Normalization::None: return "none";
    case Normalization::Clip: return "clip";
    case Normalization::Siglip: return "siglip";
    default: return "imagenet";
  }
}

NormalizationStats normalization_stats(Normalization norm) {
  switch (norm) {
    case Normalization::Clip: return {{0.48145466f, 0.4578275f, 0.40821073f}, {0.26862954f, 0.26130258f, 0.27577711f}};
    case Normalization::Siglip: return {{0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}};
    case Normalization::ImageNet: return {{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
    default: return {{0.0f, 0.0f, 0.0f}, {1.0f, 1.0f, 1.0f}};
  }
}

void to_chw_float(const Image& image, Normalization norm, float* out) {
  MOON_CHECK(image.channels == 1 || image.channels == 3, "to_chw_float: expected 1 or 3 channels, got ", image.channels);
  const NormalizationStats st = normalization_stats(norm);
  const size_t plane = static_cast<size_t>(image.width) * image.height;
  const int c_in = image.channels;
  for (int c = 0; c < 3; ++c) {
    float* dst = out + c * plane;  // (H, W) plane of channel c
    const uint8_t* src = image.pixels.data() + (c_in == 3 ? c : 0);
    const float mean = st.mean[c], std = st.std[c];
    for (size_t i = 0; i < plane; ++i) dst[i] = (static_cast<float>(src[i * c_in]) / 255.0f - mean) / std;
  }
}

Tensor to_tensor(const Image& image, Normalization norm) {
  Tensor t = empty({3, image.height, image.width}, DType::F32);
  to_chw_float(image, norm, t.data<float>());
  return t;
}

void preprocess_into(const Image& image, const PreprocessOptions& options, float* out) {
  MOON_CHECK(options.size > 0, "preprocess: size must be positive, got ", options.size);
  // Grey is resized as one channel and replicated by to_chw_float (the same values as resizing three equal
  // channels); other channel counts are converted to RGB first. RGB input is used as is, without a copy.
  Image converted;
  if (image.channels != 1 && image.channels != 3) converted = convert_channels(image, 3);
  const Image& source = converted.empty() ? image : converted;
  const Image sized = options.center_crop ? resize_shortest_center_crop(source, options.size, options.filter)
                                          : resize_square(source, options.size, options.filter);
  MOON_CHECK(sized.width == options.size && sized.height == options.size, "preprocess: resized to ", sized.width,
             "x", sized.height, " instead of ", options.size, "x", options.size);
  to_chw_float(sized, options.norm, out);
}

Tensor preprocess(const Image& image, const PreprocessOptions& options) {
  MOON_CHECK(options.size > 0, "preprocess: size must be positive, got ", options.size);
  Tensor t = empty({3, options.size, options.size}, DType::F32);  // (3, S, S)
  preprocess_into(image, options, t.data<float>());
  return t;
}

}  // namespace moon::io
