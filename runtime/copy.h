// Element copies between tensors of the same shape with any strides, dtypes and devices; and fills.
// These are the data-movement primitives under contiguous(), to(), clone() and copy_().
#pragma once

#include "runtime/tensor.h"

namespace moon {

// dst[i] = convert(src[i]) for every index; shapes must be equal (broadcast src first with expand()).
void copy_elements(const Tensor& dst, const Tensor& src);
// dst[i] = value for every index.
void fill_elements(const Tensor& dst, double value);

// Reads element `i` (row-major over the shape) of a CPU tensor of any dtype, as double. For tests and printing.
double element_as_double(const Tensor& t, int64_t i);

}  // namespace moon
