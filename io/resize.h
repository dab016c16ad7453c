// Image resizing that reproduces PIL's Image.resize (Pillow 9.4) for 8-bit images: NEAREST, BILINEAR and
// BICUBIC (a = -0.5), with PIL's antialiasing when downscaling (the filter is stretched by the scale factor,
// so every source pixel contributes). Separable: a horizontal pass into a u8 buffer, then a vertical pass,
// each with 22-bit fixed-point coefficients, rounded and clamped to 0..255 like PIL's 8-bit path.
// See docs/images.md for how it works.
#pragma once

#include <string>

#include "io/image.h"

namespace moon::io {

enum class ResizeFilter { Nearest, Bilinear, Bicubic };

ResizeFilter parse_resize_filter(const std::string& name);  // "nearest" | "bilinear" | "bicubic"; throws otherwise
const char* resize_filter_name(ResizeFilter filter);

// A source region in pixel coordinates (PIL's `box`): [x0, x1) x [y0, y1), may be fractional.
struct ResizeBox {
  float x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// PIL: image.resize((out_width, out_height), filter). Any channel count 1..4. The same size is a copy.
Image resize(const Image& image, int out_width, int out_height, ResizeFilter filter);
// PIL: image.resize((out_width, out_height), filter, box=(x0, y0, x1, y1)): resamples only the region.
Image resize_region(const Image& image, const ResizeBox& box, int out_width, int out_height, ResizeFilter filter);

// The resampling weights of one axis, as PIL computes them (exposed for tests and the docs).
struct ResampleTable {
  int taps = 0;                  // coefficients per output pixel (the widest window)
  std::vector<int> first;        // (out,) first source index of each window
  std::vector<int> count;        // (out,) window length, <= taps
  std::vector<double> weights;   // (out, taps) normalised weights, zero past count
  std::vector<int32_t> fixed;    // (out, taps) weights * 2^22, rounded half away from zero
};
ResampleTable resample_table(int in_size, float in0, float in1, int out_size, ResizeFilter filter);

}  // namespace moon::io
