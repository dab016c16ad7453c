// PIL-compatible resampling (see resize.h). Per axis, a table of windows and fixed-point weights is built
// once (resample_table); then the horizontal pass filters each needed source row into a u8 buffer of the
// output width, and the vertical pass filters columns of that buffer into the output. Rows are independent,
// so both passes run in parallel over output rows with OpenMP.
#include "io/resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/error.h"

namespace moon::io {

namespace {

constexpr int kPrecisionBits = 22;  // 32 bits - 8 for the pixel - 2 for overshoot of negative lobes

// Triangle filter (bilinear), support 1.
double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Keys' cubic convolution with a = -0.5 (Catmull-Rom), support 2.
double cubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Rounds a fixed-point accumulator to u8 with clamping.
inline uint8_t clamp_shift(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Horizontal pass: rows [row0, row0 + rows) of `in` filtered to width table.first.size().
// in: (H, W, C) u8, out: (rows, out_w, C) u8.
template <int C>
void horizontal_pass(const Image& in, int row0, int rows, const ResampleTable& t, uint8_t* out) {
  const int out_w = static_cast<int>(t.first.size());
  const int32_t half = 1 << (kPrecisionBits - 1);
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(rows) * out_w * t.taps > 65536)
  for (int y = 0; y < rows; ++y) {
    const uint8_t* src = in.row(row0 + y);
    uint8_t* dst = out + static_cast<size_t>(y) * out_w * C;
    for (int x = 0; x < out_w; ++x) {
      const int32_t* k = &t.fixed[static_cast<size_t>(x) * t.taps];
      const uint8_t* s = src + static_cast<size_t>(t.first[x]) * C;
      int32_t acc[C];
      for (int c = 0; c < C; ++c) acc[c] = half;
      for (int i = 0; i < t.count[x]; ++i)
        for (int c = 0; c < C; ++c) acc[c] += s[i * C + c] * k[i];
      for (int c = 0; c < C; ++c) dst[x * C + c] = clamp_shift(acc[c]);
    }
  }
}

// Vertical pass: in is (in_rows, W, C) u8 whose row 0 is source row `row_base`; out is (out_h, W, C) u8.
void vertical_pass(const uint8_t* in, int width, int channels, int row_base, const ResampleTable& t, uint8_t* out) {
  const int out_h = static_cast<int>(t.first.size());
  const size_t row_len = static_cast<size_t>(width) * channels;
  const int32_t half = 1 << (kPrecisionBits - 1);
#pragma omp parallel if (static_cast<int64_t>(out_h) * row_len * t.taps > 65536)
  {
    std::vector<int32_t> acc(row_len);  // (W * C,) accumulators of one output row
#pragma omp for schedule(static)
    for (int y = 0; y < out_h; ++y) {
      const int32_t* k = &t.fixed[static_cast<size_t>(y) * t.taps];
      const uint8_t* s = in + static_cast<size_t>(t.first[y] - row_base) * row_len;
      std::fill(acc.begin(), acc.end(), half);
      // row by row, so that the inner loop runs along contiguous memory and vectorises
      for (int i = 0; i < t.count[y]; ++i) {
        const uint8_t* src = s + static_cast<size_t>(i) * row_len;
        const int32_t ki = k[i];
        for (size_t j = 0; j < row_len; ++j) acc[j] += src[j] * ki;
      }
      uint8_t* dst = out + static_cast<size_t>(y) * row_len;
      for (size_t j = 0; j < row_len; ++j) dst[j] = clamp_shift(acc[j]);
    }
  }
}

// Nearest neighbour as PIL does it for a pure scale: source index floor(box0 + (i + 0.5) * step), the
// position accumulated in double from the first centre; positions outside the image give 0.
Image resize_nearest(const Image& image, const ResizeBox& box, int out_w, int out_h) {
  Image out = make_image(out_w, out_h, image.channels);
  const double ax = double(box.x1 - box.x0) / out_w, ay = double(box.y1 - box.y0) / out_h;
  auto coord = [](double v) { return v < 0.0 ? -1 : static_cast<int>(v); };
  std::vector<int> xs(out_w);  // (out_w,) source column or -1
  double xo = box.x0 + ax * 0.5;
  for (int x = 0; x < out_w; ++x, xo += ax) {
    const int xi = coord(xo);
    xs[x] = xi < image.width ? xi : -1;
  }
  double yo = box.y0 + ay * 0.5;
  const int c = image.channels;
  for (int y = 0; y < out_h; ++y, yo += ay) {
    const int yi = coord(yo);
    if (yi < 0 || yi >= image.height) continue;
    const uint8_t* src = image.row(yi);
    uint8_t* dst = out.row(y);
    for (int x = 0; x < out_w; ++x)
      if (xs[x] >= 0) std::memcpy(dst + x * c, src + xs[x] * c, c);
  }
  return out;
}

}  // namespace

ResizeFilter parse_resize_filter(const std::string& name) {
  if (name == "nearest") return ResizeFilter::Nearest;
  if (name == "bilinear") return ResizeFilter::Bilinear;
  if (name == "bicubic") return ResizeFilter::Bicubic;
  fail("unknown resize filter '", name, "'; expected nearest, bilinear or bicubic");
}

const char* resize_filter_name(ResizeFilter filter) {
  switch (filter) {
    case ResizeFilter::Nearest: return "nearest";
    case ResizeFilter::Bilinear: return "bilinear";
    default: return "bicubic";
  }
}

ResampleTable resample_table(int in_size, float in0, float in1, int out_size, ResizeFilter filter) {
  MOON_CHECK(filter != ResizeFilter::Nearest, "resample_table: nearest has no weights");
  MOON_CHECK(in_size > 0 && out_size > 0, "resample_table: sizes must be positive (", in_size, " -> ", out_size, ")");
  const double base_support = filter == ResizeFilter::Bicubic ? 2.0 : 1.0;
  double (*kernel)(double) = filter == ResizeFilter::Bicubic ? cubic : triangle;
  // Downscaling stretches the filter by the scale so that it averages every source pixel (antialiasing).
  const double scale = double(in1 - in0) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = base_support * filter_scale;
  const double inv_filter_scale = 1.0 / filter_scale;

  ResampleTable t;
  t.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<size_t>(out_size) * t.taps, 0.0);
  t.fixed.assign(static_cast<size_t>(out_size) * t.taps, 0);
  for (int o = 0; o < out_size; ++o) {
    const double center = in0 + (o + 0.5) * scale;  // the output pixel's centre in source coordinates
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    const int n = std::max(hi - lo, 0);
    double* w = &t.weights[static_cast<size_t>(o) * t.taps];
    double total = 0.0;
    for (int i = 0; i < n; ++i) {
      // distance from the centre of source pixel lo + i to the output centre, in filter units
      w[i] = kernel((i + lo - center + 0.5) * inv_filter_scale);
      total += w[i];
    }
    if (total != 0.0)
      for (int i = 0; i < n; ++i) w[i] /= total;
    int32_t* f = &t.fixed[static_cast<size_t>(o) * t.taps];
    for (int i = 0; i < n; ++i) {
      const double v = w[i] * (1 << kPrecisionBits);
      f[i] = static_cast<int32_t>(v < 0 ? v - 0.5 : v + 0.5);  // half away from zero
    }
    t.first[o] = lo;
    t.count[o] = n;
  }
  return t;
}

Image resize_region(const Image& image, const ResizeBox& box, int out_w, int out_h, ResizeFilter filter) {
  MOON_CHECK(!image.empty() && image.width > 0 && image.height > 0, "resize: empty input image");
  MOON_CHECK(image.channels >= 1 && image.channels <= 4, "resize: expected 1..4 channels, got ", image.channels);
  MOON_CHECK(out_w > 0 && out_h > 0, "resize: output size must be positive, got ", out_w, "x", out_h);
  MOON_CHECK(box.x0 >= 0 && box.y0 >= 0 && box.x1 <= image.width && box.y1 <= image.height && box.x1 > box.x0 &&
                 box.y1 > box.y0,
             "resize: box (", box.x0, ", ", box.y0, ", ", box.x1, ", ", box.y1, ") is not inside the ", image.width,
             "x", image.height, " image");
  if (filter == ResizeFilter::Nearest) return resize_nearest(image, box, out_w, out_h);

  const bool need_h = out_w != image.width || box.x0 != 0 || box.x1 != out_w;
  const bool need_v = out_h != image.height || box.y0 != 0 || box.y1 != out_h;
  if (!need_h && !need_v) return image;

  const ResampleTable vt = resample_table(image.height, box.y0, box.y1, out_h, filter);
  const int C = image.channels;
  // Horizontal pass only over the source rows the vertical pass reads.
  const int row_first = need_v ? vt.first.front() : 0;
  const int row_last = need_v ? vt.first.back() + vt.count.back() : image.height;
  Image mid;  // (rows, out_w, C) u8, row 0 = source row row_first
  const Image* vsrc = &image;
  int vbase = 0;
  if (need_h) {
    const ResampleTable ht = resample_table(image.width, box.x0, box.x1, out_w, filter);
    mid = make_image(out_w, std::max(row_last - row_first, 1), C);
    const int rows = row_last - row_first;
    switch (C) {
      case 1: horizontal_pass<1>(image, row_first, rows, ht, mid.pixels.data()); break;
      case 2: horizontal_pass<2>(image, row_first, rows, ht, mid.pixels.data()); break;
      case 3: horizontal_pass<3>(image, row_first, rows, ht, mid.pixels.data()); break;
      default: horizontal_pass<4>(image, row_first, rows, ht, mid.pixels.data()); break;
    }
    if (!need_v) return mid;
    vsrc = &mid;
    vbase = row_first;
  }
  Image out = make_image(vsrc->width, out_h, C);
  vertical_pass(vsrc->pixels.data(), vsrc->width, C, vbase, vt, out.pixels.data());
  return out;
}

Image resize(const Image& image, int out_width, int out_height, ResizeFilter filter) {
  const ResizeBox whole{0.0f, 0.0f, static_cast<float>(image.width), static_cast<float>(image.height)};
  return resize_region(image, whole, out_width, out_height, filter);
}

}  // namespace moon::io
