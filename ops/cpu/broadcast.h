// Row iteration for broadcasting elementwise kernels on the CPU.
//
// The output is contiguous. Inputs are expanded to the output shape (stride 0 on broadcast dimensions).
// for_each_broadcast_row() splits the output into rows of its last dimension and calls
//   row(out_offset, in_offsets[], n, in_inner_strides[])
// for each, in parallel for large tensors. Inner strides are 1 (contiguous), 0 (a broadcast scalar) or
// anything else (a strided view), so a kernel can pick a vector path for the common cases.
#pragma once

#include <array>
#include <cstdint>

#include "runtime/tensor.h"

namespace moon::cpu {

template <size_t N, class Row>
void for_each_broadcast_row(const Shape& out_shape, const std::array<const Strides*, N>& in_strides, Row&& row) {
  const int64_t nd = static_cast<int64_t>(out_shape.size());
  const int64_t numel = shape_numel(out_shape);
  if (numel == 0) return;
  if (nd == 0) {
    std::array<int64_t, N> offs{}, steps{};
    row(int64_t{0}, offs, int64_t{1}, steps);
    return;
  }
  const int64_t inner = out_shape[nd - 1];
  const int64_t rows = numel / inner;
  std::array<int64_t, N> steps;
  for (size_t k = 0; k < N; ++k) steps[k] = (*in_strides[k])[nd - 1];
#pragma omp parallel for schedule(static) if (numel > (1 << 15) && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    std::array<int64_t, N> offs{};
    int64_t rem = r;
    for (int64_t d = nd - 2; d >= 0; --d) {
      const int64_t idx = rem % out_shape[d];
      rem /= out_shape[d];
      for (size_t k = 0; k < N; ++k) offs[k] += idx * (*in_strides[k])[d];
    }
    row(r * inner, offs, inner, steps);
  }
}

}  // namespace moon::cpu
