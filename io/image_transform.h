// The deterministic half of image preprocessing: crops, the CLIP and SigLIP resize recipes, normalisation
// presets, and conversion of an 8-bit (H, W, C) image into a float (C, H, W) buffer or moon::Tensor.
// Each step matches what torchvision / Hugging Face do on PIL images (see docs/images.md).
#pragma once

#include <array>
#include <string>

#include "io/image.h"
#include "io/resize.h"
#include "runtime/tensor.h"

namespace moon::io {

// The window [top, top + height) x [left, left + width) of an image; parts outside the image are 0.
Image crop(const Image& image, int top, int left, int height, int width);

// torchvision CenterCrop: top = round((H - h) / 2), left = round((W - w) / 2) with Python's round (half to
// even). A crop larger than the image pads with zeros, the image placed at ((h - H) / 2, (w - W) / 2) floored.
Image center_crop(const Image& image, int height, int width);

// The (height, width) that resizes the shorter side to `size`, the longer one to int(size * long / short)
// (torchvision Resize(int) and CLIP's image processor).
std::array<int, 2> shortest_side_size(int height, int width, int size);

// CLIP style: shorter side to `size`, then the centre size x size crop.
Image resize_shortest_center_crop(const Image& image, int size, ResizeFilter filter);
// SigLIP style: a direct resize to size x size (aspect ratio not kept).
Image resize_square(const Image& image, int size, ResizeFilter filter);

enum class Normalization { None, Clip, Siglip, ImageNet };
Normalization parse_normalization(const std::string& name);  // "none" | "clip" | "siglip" | "imagenet"
const char* normalization_name(Normalization norm);

struct NormalizationStats {
  std::array<float, 3> mean, std;
};
// None: mean 0, std 1 (values x / 255 in [0, 1]).
NormalizationStats normalization_stats(Normalization norm);

// out[c, y, x] = (pixel / 255 - mean[c]) / std[c], computed in float like torchvision's ToTensor + Normalize.
// image must have 3 channels (1-channel images are replicated first); out: (3, H, W) f32.
void to_chw_float(const Image& image, Normalization norm, float* out);
Tensor to_tensor(const Image& image, Normalization norm);  // f32 (3, H, W)

struct PreprocessOptions {
  int size = 224;
  ResizeFilter filter = ResizeFilter::Bicubic;
  bool center_crop = true;                  // true: CLIP style (shortest side + centre crop); false: square resize
  Normalization norm = Normalization::Clip;
};

// The full inference preprocess: resize (and crop) to size x size, then normalise. Returns f32 (3, size, size).
Tensor preprocess(const Image& image, const PreprocessOptions& options);
// The same, written into `out`: 3 * size * size floats, (3, size, size) C order (e.g. one row of a batch).
void preprocess_into(const Image& image, const PreprocessOptions& options, float* out);

}  // namespace moon::io
