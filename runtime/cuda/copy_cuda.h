// CUDA halves of runtime/copy.h (declarations in plain C++: safe to include in any build; defined only in a
// build with the CUDA backend, and referenced through MOON_CUDA_KERNEL).
#pragma once

#include "runtime/tensor.h"

namespace moon::cuda {

// dst[i] = convert(src[i]) where either tensor is on a CUDA device: device to device (one kernel, any
// strides and dtypes), host to device and device to host (through pinned staging buffers).
void copy_elements(const Tensor& dst, const Tensor& src);
// dst[i] = value for a CUDA tensor of any dtype and strides.
void fill_elements(const Tensor& dst, double value);

}  // namespace moon::cuda
