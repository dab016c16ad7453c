// Element types of tensors, their sizes and names, and bf16/f16 <-> f32 conversion.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace moon {

enum class DType : uint8_t { F32, BF16, F16, I32, I64, U8 };

size_t dtype_size(DType t);        // bytes per element
const char* dtype_name(DType t);   // "f32", "bf16", ...
bool is_floating(DType t);         // f32, bf16, f16
DType dtype_from_name(const std::string& name);  // throws moon::Error on an unknown name

// bf16 is the top half of an f32; conversion rounds to nearest even and keeps NaN a NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE half precision (storage only): round to nearest even, with subnormals, inf and NaN.
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);

}  // namespace moon
