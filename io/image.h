// Image decoding: JPEG, PNG and BMP bytes (through stb_image) into 8-bit pixels, with the rules every
// preprocessing step relies on: alpha is composited on white, grey is replicated to RGB when RGB is asked,
// and every bad input (empty, truncated, lying header, unknown format) is a moon::Error naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moon::io {

// An 8-bit image. channels is 1 (grey) or 3 (RGB) after decode_image.
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;  // (H, W, C) row-major u8

  bool empty() const { return pixels.empty(); }
  size_t row_bytes() const { return static_cast<size_t>(width) * channels; }
  uint8_t* row(int y) { return pixels.data() + static_cast<size_t>(y) * row_bytes(); }
  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * row_bytes(); }
  uint8_t& at(int y, int x, int c) { return pixels[(static_cast<size_t>(y) * width + x) * channels + c]; }
  uint8_t at(int y, int x, int c) const { return pixels[(static_cast<size_t>(y) * width + x) * channels + c]; }
};

// A zero-filled image of the given size (channels 1..4). Throws on non-positive sizes.
Image make_image(int width, int height, int channels);

enum class ImageFormat { Unknown, PNG, JPEG, BMP };
ImageFormat sniff_image_format(const uint8_t* data, size_t size);  // from the magic bytes
const char* image_format_name(ImageFormat f);                      // "PNG", "JPEG", "BMP", "unknown"

// Decodes an encoded image held in memory. `name` is used in error messages (the file name); `channels` is
// 1 (grey, ITU-R 601 luma) or 3 (RGB). Alpha is composited on white: out = round(a*c + (1-a)*255), a in [0,1].
Image decode_image(const uint8_t* data, size_t size, const std::string& name, int channels = 3);

// Reads and decodes a file (errors name the path).
Image load_image(const std::string& path, int channels = 3);

// Converts between 1 and 3 channels (grey replicated to RGB, RGB to grey with PIL's "L" luma weights).
Image convert_channels(const Image& image, int channels);

}  // namespace moon::io
