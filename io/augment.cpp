// Random resized crop, flip and colour jitter driven by counter-based random numbers (see augment.h).
//
// Counter layout for one sample (key = seed, base = stream * 64):
//   base + 0 .. base + 9 : crop tries, lanes (area, log ratio, top, left)
//   base + 10            : lane 0 flip, lanes 1..3 the order of the jitter operations
//   base + 11            : lanes (brightness, contrast, saturation, hue) factors
#include "io/augment.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "runtime/error.h"
#include "runtime/rng.h"

namespace moon::io {

namespace {

constexpr uint64_t kCountersPerStream = 64;

// Uniform in [0, 1) with 32 bits of resolution.
inline double unit(uint32_t x) { return x * (1.0 / 4294967296.0); }
inline double uniform(uint32_t x, double lo, double hi) { return lo + (hi - lo) * unit(x); }
// Uniform integer in [0, n) for n >= 1.
inline int below(uint32_t x, int n) { return std::min(static_cast<int>(unit(x) * n), n - 1); }
inline uint8_t to_u8(float v) { return static_cast<uint8_t>(std::lround(std::clamp(v, 0.0f, 255.0f))); }

// Grey level with the ITU-R 601 weights torchvision uses for rgb_to_grayscale.
inline float grey(const uint8_t* p) { return 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2]; }

void check_rgb(const Image& image, const char* what) {
  MOON_CHECK(image.channels == 3, what, ": needs an RGB image, got ", image.channels, " channel(s)");
}

// RGB in [0, 1] -> HSV with h in [0, 1).
void rgb_to_hsv(float r, float g, float b, float& h, float& s, float& v) {
  const float mx = std::max({r, g, b}), mn = std::min({r, g, b}), d = mx - mn;
  v = mx;
  s = mx > 0.0f ? d / mx : 0.0f;
  if (d <= 0.0f) {
    h = 0.0f;
    return;
  }
  if (mx == r) h = (g - b) / d;
  else if (mx == g) h = 2.0f + (b - r) / d;
  else h = 4.0f + (r - g) / d;
  h /= 6.0f;
  if (h < 0.0f) h += 1.0f;
}

// HSV (h in [0, 1)) -> RGB in [0, 1].
void hsv_to_rgb(float h, float s, float v, float& r, float& g, float& b) {
  const float h6 = h * 6.0f;
  const int sector = static_cast<int>(std::floor(h6)) % 6;
  const float f = h6 - std::floor(h6);
  const float p = v * (1.0f - s), q = v * (1.0f - s * f), t = v * (1.0f - s * (1.0f - f));
  switch (sector) {
    case 0: r = v, g = t, b = p; break;
    case 1: r = q, g = v, b = p; break;
    case 2: r = p, g = v, b = t; break;
    case 3: r = p, g = q, b = v; break;
    case 4: r = t, g = p, b = v; break;
    default: r = v, g = p, b = q; break;
  }
}

}  // namespace

CropBox random_resized_crop_box(int height, int width, const AugmentOptions& o, uint64_t seed, uint64_t stream) {
  MOON_CHECK(height > 0 && width > 0, "random_resized_crop: empty image");
  MOON_CHECK(o.scale_min > 0 && o.scale_min <= o.scale_max, "random_resized_crop: bad scale range [", o.scale_min,
             ", ", o.scale_max, "]");
  MOON_CHECK(o.ratio_min > 0 && o.ratio_min <= o.ratio_max, "random_resized_crop: bad ratio range [", o.ratio_min,
             ", ", o.ratio_max, "]");
  const double area = double(height) * width;
  const double log_lo = std::log(double(o.ratio_min)), log_hi = std::log(double(o.ratio_max));
  const uint64_t base = stream * kCountersPerStream;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const auto r = philox4x32(base + attempt, seed);
    const double target_area = area * uniform(r[0], o.scale_min, o.scale_max);
    const double aspect = std::exp(uniform(r[1], log_lo, log_hi));
    const int w = static_cast<int>(std::nearbyint(std::sqrt(target_area * aspect)));
    const int h = static_cast<int>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height)
      return {below(r[2], height - h + 1), below(r[3], width - w + 1), h, w};
  }
  // Fallback: the whole image, or its largest centred crop whose ratio lies in range.
  const double in_ratio = double(width) / height;
  int w = width, h = height;
  if (in_ratio < o.ratio_min) h = static_cast<int>(std::nearbyint(w / double(o.ratio_min)));
  else if (in_ratio > o.ratio_max) w = static_cast<int>(std::nearbyint(h * double(o.ratio_max)));
  h = std::clamp(h, 1, height), w = std::clamp(w, 1, width);
  return {(height - h) / 2, (width - w) / 2, h, w};
}

Image flip_horizontal(const Image& image) {
  Image out = image;
  const int c = image.channels;
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* src = image.row(y);
    uint8_t* dst = out.row(y);
    for (int x = 0; x < image.width; ++x)
      for (int k = 0; k < c; ++k) dst[x * c + k] = src[(image.width - 1 - x) * c + k];
  }
  return out;
}

Image adjust_brightness(const Image& image, float factor) {
  Image out = image;
  for (uint8_t& p : out.pixels) p = to_u8(p * factor);
  return out;
}

Image adjust_contrast(const Image& image, float factor) {
  // blend with the image's mean grey level
  double sum = 0.0;
  const size_t n = static_cast<size_t>(image.width) * image.height;
  for (size_t i = 0; i < n; ++i)
    sum += image.channels == 3 ? grey(&image.pixels[i * 3]) : image.pixels[i * image.channels];
  const float mean = static_cast<float>(sum / double(std::max<size_t>(n, 1)));
  Image out = image;
  for (uint8_t& p : out.pixels) p = to_u8(factor * p + (1.0f - factor) * mean);
  return out;
}

Image adjust_saturation(const Image& image, float factor) {
  check_rgb(image, "adjust_saturation");
  Image out = image;
  const size_t n = static_cast<size_t>(image.width) * image.height;
  for (size_t i = 0; i < n; ++i) {
    uint8_t* p = &out.pixels[i * 3];
    const float g = grey(p);
    for (int c = 0; c < 3; ++c) p[c] = to_u8(factor * p[c] + (1.0f - factor) * g);
  }
  return out;
}

Image adjust_hue(const Image& image, float shift) {
  check_rgb(image, "adjust_hue");
  MOON_CHECK(shift >= -0.5f && shift <= 0.5f, "adjust_hue: shift must be in [-0.5, 0.5], got ", shift);
  Image out = image;
  const size_t n = static_cast<size_t>(image.width) * image.height;
  for (size_t i = 0; i < n; ++i) {
    uint8_t* p = &out.pixels[i * 3];
    float h, s, v, r, g, b;
    rgb_to_hsv(p[0] / 255.0f, p[1] / 255.0f, p[2] / 255.0f, h, s, v);
    h += shift;
    h -= std::floor(h);
    hsv_to_rgb(h, s, v, r, g, b);
    p[0] = to_u8(r * 255.0f), p[1] = to_u8(g * 255.0f), p[2] = to_u8(b * 255.0f);
  }
  return out;
}

Image augment(const Image& image, const AugmentOptions& o, uint64_t seed, uint64_t stream) {
  MOON_CHECK(!image.empty(), "augment: empty image");
  MOON_CHECK(o.size > 0, "augment: size must be positive, got ", o.size);
  MOON_CHECK(o.brightness >= 0 && o.contrast >= 0 && o.saturation >= 0 && o.hue >= 0 && o.hue <= 0.5f,
             "augment: jitter amounts must be >= 0 (hue <= 0.5)");
  const uint64_t base = stream * kCountersPerStream;

  Image out;
  if (o.random_resized_crop) {
    const CropBox b = random_resized_crop_box(image.height, image.width, o, seed, stream);
    const ResizeBox region{float(b.left), float(b.top), float(b.left + b.width), float(b.top + b.height)};
    out = resize_region(image, region, o.size, o.size, o.filter);
  } else {
    out = resize(image, o.size, o.size, o.filter);
  }

  const auto r = philox4x32(base + 10, seed);
  if (o.flip_probability > 0 && unit(r[0]) < o.flip_probability) out = flip_horizontal(out);

  // Jitter operations in a random order (like torchvision's ColorJitter), each skipped when its amount is 0.
  std::array<int, 4> order = {0, 1, 2, 3};
  for (int i = 3; i > 0; --i) std::swap(order[i], order[below(r[4 - i], i + 1)]);
  const auto f = philox4x32(base + 11, seed);
  for (int op : order) {
    if (op == 0 && o.brightness > 0)
      out = adjust_brightness(out, float(uniform(f[0], std::max(0.0f, 1 - o.brightness), 1 + o.brightness)));
    if (op == 1 && o.contrast > 0)
      out = adjust_contrast(out, float(uniform(f[1], std::max(0.0f, 1 - o.contrast), 1 + o.contrast)));
    if (op == 2 && o.saturation > 0 && out.channels == 3)
      out = adjust_saturation(out, float(uniform(f[2], std::max(0.0f, 1 - o.saturation), 1 + o.saturation)));
    if (op == 3 && o.hue > 0 && out.channels == 3) out = adjust_hue(out, float(uniform(f[3], -o.hue, o.hue)));
  }
  return out;
}

}  // namespace moon::io
