// Image decoding over stb_image (compiled in io/stb_impl.cpp), plus the checks stb_image does not make:
// a PNG whose header promises more pixels than its data can hold, a BMP shorter than its pixel array, a
// JPEG cut off before its end-of-image marker. stb_image would read zeros past the end of such files (BMP,
// JPEG) or allocate for the lying header first (PNG); we refuse them up front with a message naming the file.
#include "io/image.h"

#include <stb/stb_image.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "io/file_util.h"
#include "runtime/error.h"

namespace moon::io {

namespace {

uint32_t read_le32(const uint8_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24); }
uint16_t read_le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// A short human description of the first bytes of an unsupported file ("GIF", "WebP", ... or hex).
std::string describe_magic(const uint8_t* data, size_t size) {
  auto starts = [&](const char* magic) {
    const size_t n = std::strlen(magic);
    return size >= n && std::memcmp(data, magic, n) == 0;
  };
  if (starts("GIF8")) return "a GIF file";
  if (starts("RIFF") && size >= 12 && std::memcmp(data + 8, "WEBP", 4) == 0) return "a WebP file";
  if (starts("II*") || starts("MM")) return "a TIFF file";
  if (starts("<svg") || starts("<?xml")) return "an SVG/XML file";
  std::string hex = "first bytes";
  static const char* digits = "0123456789abcdef";
  for (size_t i = 0; i < std::min<size_t>(size, 8); ++i) {
    hex += ' ';
    hex += digits[data[i] >> 4];
    hex += digits[data[i] & 15];
  }
  return hex;
}

// PNG: the raw (unfiltered) pixel bytes the header promises must fit in what deflate can expand the whole
// file into (at most 1032:1), else the data is necessarily truncated.
void check_png_size(const uint8_t* data, size_t size, const std::string& name, int w, int h) {
  if (size < 33) fail(name, ": PNG file is truncated (", size, " bytes, the header alone needs 33)");
  const int depth = data[24], color_type = data[25];
  int samples = 1;
  if (color_type == 2) samples = 3;
  else if (color_type == 4) samples = 2;
  else if (color_type == 6) samples = 4;
  const double raw_bits = double(w) * double(h) * samples * std::max(depth, 1);
  const double max_bits = (double(size) * 1032.0 + 4096.0) * 8.0;
  if (raw_bits > max_bits)
    fail(name, ": PNG header says ", w, "x", h, " but the data is truncated (", size,
         " bytes cannot hold that many pixels)");
}

// BMP (stb_image reads only uncompressed BMPs): the pixel array must fit in the file.
void check_bmp_size(const uint8_t* data, size_t size, const std::string& name, int w, int h) {
  if (size < 30) fail(name, ": BMP file is truncated (", size, " bytes)");
  const uint64_t offset = read_le32(data + 10);
  const uint32_t header_size = read_le32(data + 14);
  const int bpp = header_size == 12 ? read_le16(data + 24) : read_le16(data + 28);
  if (bpp <= 0) return;  // stb_image reports the bad header
  const uint64_t stride = ((uint64_t(w) * bpp + 31) / 32) * 4;
  const uint64_t needed = offset + stride * uint64_t(h);
  if (needed > size)
    fail(name, ": BMP header says ", w, "x", h, " at ", bpp, " bits per pixel but the data is truncated (needs ",
         needed, " bytes, the file has ", size, ")");
}

// JPEG: walks the marker segments to the first start-of-scan, then requires an end-of-image marker after it
// (0xFF inside entropy-coded data is always stuffed, so FF D9 there can only be the real marker).
void check_jpeg_complete(const uint8_t* data, size_t size, const std::string& name) {
  size_t p = 2;
  while (p + 1 < size) {
    if (data[p] != 0xFF) return;  // not a marker: let stb_image report the corruption
    const uint8_t marker = data[p + 1];
    if (marker == 0xFF) {  // fill byte
      ++p;
      continue;
    }
    if (marker == 0xD8 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) {  // no length field
      p += 2;
      continue;
    }
    if (marker == 0xD9) return;  // end of image before any scan: stb_image says so
    if (p + 3 >= size) break;
    const size_t length = (size_t(data[p + 2]) << 8) | data[p + 3];
    if (marker == 0xDA) {
      for (size_t q = p + 2 + length; q + 1 < size; ++q)
        if (data[q] == 0xFF && data[q + 1] == 0xD9) return;
      fail(name, ": JPEG data is truncated (no end-of-image marker after the scan data; ", size, " bytes)");
    }
    p += 2 + length;
  }
  fail(name, ": JPEG data is truncated (the file ends inside its headers, before any scan data; ", size, " bytes)");
}

// JPEG: every 8x8 block of the full-resolution component costs at least one bit of entropy-coded data (the
// DC code), so a header promising more blocks than the file has bits is lying.
void check_jpeg_size(size_t size, const std::string& name, int w, int h) {
  const double blocks = std::ceil(w / 8.0) * std::ceil(h / 8.0);
  if (blocks > 8.0 * double(size) + 1024.0)
    fail(name, ": JPEG header says ", w, "x", h, " but the data is truncated (", size,
         " bytes cannot hold that many pixels)");
}

// Frees stb_image's buffer on every path.
struct StbPixels {
  stbi_uc* p = nullptr;
  ~StbPixels() { stbi_image_free(p); }
};

// White-composited value of colour c under alpha a (both 0..255), rounded to nearest.
inline uint8_t over_white(int c, int a) { return static_cast<uint8_t>((a * c + (255 - a) * 255 + 127) / 255); }

// PIL's "L" conversion: ITU-R 601 luma in 16-bit fixed point, rounded.
inline uint8_t luma(int r, int g, int b) { return static_cast<uint8_t>((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16); }

}  // namespace

Image make_image(int width, int height, int channels) {
  MOON_CHECK(width > 0 && height > 0, "image: size must be positive, got ", width, "x", height);
  MOON_CHECK(channels >= 1 && channels <= 4, "image: channels must be 1..4, got ", channels);
  Image im;
  im.width = width, im.height = height, im.channels = channels;
  im.pixels.assign(static_cast<size_t>(width) * height * channels, 0);
  return im;
}

ImageFormat sniff_image_format(const uint8_t* data, size_t size) {
  static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size >= 8 && std::memcmp(data, png_magic, 8) == 0) return ImageFormat::PNG;
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageFormat::JPEG;
  if (size >= 2 && data[0] == 'B' && data[1] == 'M') return ImageFormat::BMP;
  return ImageFormat::Unknown;
}

const char* image_format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::PNG: return "PNG";
    case ImageFormat::JPEG: return "JPEG";
    case ImageFormat::BMP: return "BMP";
    default: return "unknown";
  }
}

Image decode_image(const uint8_t* data, size_t size, const std::string& name, int channels) {
  MOON_CHECK(channels == 1 || channels == 3, name, ": decode_image: channels must be 1 or 3, got ", channels);
  if (size == 0 || data == nullptr) fail(name, ": empty file (0 bytes); expected a JPEG, PNG or BMP image");
  const ImageFormat format = sniff_image_format(data, size);
  if (format == ImageFormat::Unknown)
    fail(name, ": unsupported image format (", describe_magic(data, size), "); moon reads JPEG, PNG and BMP");
  const char* fmt = image_format_name(format);
  MOON_CHECK(size <= static_cast<size_t>(INT32_MAX), name, ": ", fmt, " file too large (", size, " bytes)");
  const int len = static_cast<int>(size);

  if (format == ImageFormat::JPEG) check_jpeg_complete(data, size, name);
  int w = 0, h = 0, file_channels = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &file_channels))
    fail(name, ": cannot read the ", fmt, " header (stb_image: ", stbi_failure_reason(), ")");
  if (format == ImageFormat::PNG) check_png_size(data, size, name, w, h);
  if (format == ImageFormat::BMP) check_bmp_size(data, size, name, w, h);
  if (format == ImageFormat::JPEG) check_jpeg_size(size, name, w, h);

  StbPixels decoded;
  int dw = 0, dh = 0, dc = 0;
  decoded.p = stbi_load_from_memory(data, len, &dw, &dh, &dc, 0);
  if (!decoded.p) {
    if (format == ImageFormat::PNG)
      fail(name, ": PNG header says ", w, "x", h, " but the data is truncated or corrupt (stb_image: ",
           stbi_failure_reason(), ")");
    fail(name, ": cannot decode the ", fmt, " image (", w, "x", h, "; stb_image: ", stbi_failure_reason(), ")");
  }
  MOON_CHECK(dc >= 1 && dc <= 4 && dw > 0 && dh > 0, name, ": decoder returned an invalid image (", dw, "x", dh, "x", dc, ")");

  Image out = make_image(dw, dh, channels);
  const size_t n = static_cast<size_t>(dw) * dh;
  const stbi_uc* src = decoded.p;  // (H, W, dc) row-major u8
  uint8_t* dst = out.pixels.data();  // (H, W, channels) row-major u8
  for (size_t i = 0; i < n; ++i, src += dc) {
    int r, g, b;
    if (dc <= 2) {  // grey, grey+alpha
      r = g = b = dc == 2 ? over_white(src[0], src[1]) : src[0];
    } else if (dc == 3) {
      r = src[0], g = src[1], b = src[2];
    } else {
      r = over_white(src[0], src[3]), g = over_white(src[1], src[3]), b = over_white(src[2], src[3]);
    }
    if (channels == 3) {
      dst[i * 3 + 0] = static_cast<uint8_t>(r), dst[i * 3 + 1] = static_cast<uint8_t>(g), dst[i * 3 + 2] = static_cast<uint8_t>(b);
    } else {
      dst[i] = dc <= 2 ? static_cast<uint8_t>(r) : luma(r, g, b);
    }
  }
  return out;
}

Image load_image(const std::string& path, int channels) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return decode_image(bytes.data(), bytes.size(), path, channels);
}

Image convert_channels(const Image& image, int channels) {
  MOON_CHECK(channels == 1 || channels == 3, "convert_channels: channels must be 1 or 3, got ", channels);
  MOON_CHECK(image.channels == 1 || image.channels == 3, "convert_channels: input has ", image.channels,
             " channels; expected 1 or 3");
  if (image.channels == channels) return image;
  Image out = make_image(image.width, image.height, channels);
  const size_t n = static_cast<size_t>(image.width) * image.height;
  const uint8_t* s = image.pixels.data();
  uint8_t* d = out.pixels.data();
  if (channels == 3) {
    for (size_t i = 0; i < n; ++i) d[i * 3] = d[i * 3 + 1] = d[i * 3 + 2] = s[i];
  } else {
    for (size_t i = 0; i < n; ++i) d[i] = luma(s[i * 3], s[i * 3 + 1], s[i * 3 + 2]);
  }
  return out;
}

}  // namespace moon::io
