// IDX files (the MNIST / Fashion-MNIST format), plain or gzip'd: a magic of two zero bytes, a dtype byte,
// the number of dimensions, then each dimension as a big-endian u32, then the data, big-endian, row-major.
// Every header field is checked against the file's size; errors name the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moon::io {

enum class IdxType : uint8_t { U8 = 0x08, I8 = 0x09, I16 = 0x0B, I32 = 0x0C, F32 = 0x0D, F64 = 0x0E };

struct IdxArray {
  IdxType type = IdxType::U8;
  std::vector<uint32_t> dims;  // e.g. (N, 28, 28) for images, (N) for labels
  std::vector<uint8_t> data;   // product(dims) elements of `type`, row-major, in the machine's byte order
  size_t elements() const;
  size_t element_size() const;
};

size_t idx_element_size(IdxType type);  // 1, 2, 4 or 8
const char* idx_type_name(IdxType type);

// Parses IDX bytes (already decompressed); `name` is the file name used in errors.
IdxArray parse_idx(const uint8_t* bytes, size_t nbytes, const std::string& name);

// Decompresses a gzip stream; errors (a truncated or corrupt stream, output over max_bytes) name `name`.
std::vector<uint8_t> gunzip(const uint8_t* bytes, size_t nbytes, const std::string& name,
                            size_t max_bytes = size_t(1) << 32);

// Reads an IDX file, gzip'd (detected by its magic 1f 8b) or not.
IdxArray read_idx(const std::string& path);

// The bytes of an IDX file holding `array` (big-endian, uncompressed): the inverse of parse_idx.
std::vector<uint8_t> encode_idx(const IdxArray& array);

}  // namespace moon::io
