// NumPy .npy files (format 1.0 written; 1.0, 2.0 and 3.0 read) for C-order arrays of f32, i64, i32 and u8,
// so that tensors move between moon and Python (`moon preprocess`, `moon embed`, the parity tests).
//
// Layout: "\x93NUMPY", major, minor, header length (u16 LE for 1.0, u32 LE for 2.0/3.0), then a Python
// dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (3, 224, 224), } padded with spaces and a
// newline so that the data starts on a 64-byte boundary, then the raw little-endian elements.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/tensor.h"

namespace moon::io {

// The complete header (magic through padding newline) for a C-order array; its size is a multiple of 64.
std::string npy_header(DType dtype, const Shape& shape);

// Writes t (any device, any strides; f32, i64, i32 or u8) atomically to `path`.
void save_npy(const std::string& path, const Tensor& t);

// Parses an in-memory .npy file; `name` is used in error messages.
Tensor parse_npy(const uint8_t* data, size_t size, const std::string& name);
// Reads a .npy file into a new CPU tensor. Errors name the file and what is wrong with it.
Tensor load_npy(const std::string& path);

}  // namespace moon::io
