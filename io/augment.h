// Training-time image augmentation: random resized crop (torchvision RandomResizedCrop, with its
// fallback), horizontal flip and colour jitter (brightness, contrast, saturation, hue).
//
// Every random number comes from philox4x32 keyed by `seed`, at counters reserved for `stream` (the caller
// picks e.g. stream = epoch * dataset_size + product_index), so the result for a given (seed, stream) is the
// same whichever thread computes it and in whatever order. The caller normalises afterwards (to_tensor).
#pragma once

#include <cstdint>

#include "io/image.h"
#include "io/resize.h"

namespace moon::io {

struct AugmentOptions {
  int size = 224;                               // output is size x size
  ResizeFilter filter = ResizeFilter::Bicubic;  // used to resize the crop
  bool random_resized_crop = true;              // false: a plain resize to size x size
  float scale_min = 0.08f, scale_max = 1.0f;    // crop area as a fraction of the image area
  float ratio_min = 3.0f / 4.0f, ratio_max = 4.0f / 3.0f;  // crop width / height, drawn log-uniformly
  float flip_probability = 0.5f;                // horizontal flip
  float brightness = 0.0f;                      // factor uniform in [max(0, 1 - b), 1 + b]; 0 = off
  float contrast = 0.0f;                        // same, blends with the mean grey level
  float saturation = 0.0f;                      // same, blends with the pixel's grey level
  float hue = 0.0f;                             // shift uniform in [-hue, hue] turns, hue <= 0.5; 0 = off
};

// The crop window chosen by RandomResizedCrop.
struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
};

// Up to 10 tries of (area, log-ratio) draws, then torchvision's fallback (the largest centred crop with the
// ratio clamped into range). Uses counters [stream * 64, stream * 64 + 10) of key `seed`.
CropBox random_resized_crop_box(int height, int width, const AugmentOptions& options, uint64_t seed, uint64_t stream);

// (H, W, C) u8 -> (size, size, C) u8. Input with 1 or 3 channels (saturation and hue are skipped for grey).
Image augment(const Image& image, const AugmentOptions& options, uint64_t seed, uint64_t stream);

// The individual steps (deterministic), exposed for tests.
Image flip_horizontal(const Image& image);
Image adjust_brightness(const Image& image, float factor);
Image adjust_contrast(const Image& image, float factor);
Image adjust_saturation(const Image& image, float factor);
Image adjust_hue(const Image& image, float shift);  // shift in turns, [-0.5, 0.5]

}  // namespace moon::io
