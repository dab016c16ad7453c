// Unicode class lookup (binary search in generated ranges, a table for ASCII) and UTF-8 helpers.
#include "io/unicode_class.h"

#include <array>

namespace moon::io {

namespace {

struct UnicodeRange {
  uint32_t first, last;
  uint8_t bits;
};

#include "io/unicode_tables.inc"

// The classes of the 128 ASCII code points, built once from the ranges.
std::array<uint8_t, 128> make_ascii_table() {
  std::array<uint8_t, 128> t{};
  for (const UnicodeRange& r : kUnicodeRanges)
    for (uint32_t cp = r.first; cp <= r.last && cp < 128; ++cp) t[cp] = r.bits;
  return t;
}

const std::array<uint8_t, 128> kAsciiClass = make_ascii_table();

}  // namespace

uint8_t unicode_class(uint32_t cp) {
  if (cp < 128) return kAsciiClass[cp];
  // the last range whose first <= cp
  size_t lo = 0, hi = sizeof(kUnicodeRanges) / sizeof(kUnicodeRanges[0]);
  while (lo < hi) {
    const size_t mid = (lo + hi) / 2;
    if (kUnicodeRanges[mid].first <= cp) lo = mid + 1;
    else hi = mid;
  }
  if (lo == 0) return 0;
  const UnicodeRange& r = kUnicodeRanges[lo - 1];
  return cp <= r.last ? r.bits : 0;
}

const char* unicode_tables_version() { return MOON_UNICODE_VERSION; }

Utf8Char decode_utf8(const char* p, size_t n) {
  const Utf8Char bad{0xFFFD, 1, false};
  const auto b0 = static_cast<uint8_t>(p[0]);
  if (b0 < 0x80) return {b0, 1, true};
  int len;
  uint32_t cp, min_cp;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1F, min_cp = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0F, min_cp = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07, min_cp = 0x10000;
  } else {
    return bad;  // continuation byte or 0xF8..0xFF
  }
  if (n < static_cast<size_t>(len)) return bad;
  for (int i = 1; i < len; ++i) {
    const auto b = static_cast<uint8_t>(p[i]);
    if ((b & 0xC0) != 0x80) return bad;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return bad;
  return {cp, len, true};
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_valid_utf8(const char* p, size_t n) {
  size_t i = 0;
  while (i < n) {
    const Utf8Char c = decode_utf8(p + i, n - i);
    if (!c.valid) return false;
    i += c.len;
  }
  return true;
}

}  // namespace moon::io
