// Reductions over dimensions, and the cumulative sum. Each takes an f32 or bf16 tensor and returns its dtype
// (sums accumulate in f32 and round once; max values are exact); gradients come back in the input's dtype.
#pragma once

#include <vector>

#include "runtime/tensor.h"

namespace moon {

Tensor sum(const Tensor& a);  // all elements -> 0-d
Tensor sum(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& a);
Tensor mean(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim = false);
// Sums a broadcast gradient back to `shape` (the inverse of expand); used by every broadcasting backward.
Tensor sum_to(const Tensor& a, const Shape& shape);

struct MaxResult {
  Tensor values;   // the input's dtype (f32 or bf16)
  Tensor indices;  // i64, the first maximum
};
MaxResult max(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& a);  // all elements -> 0-d
Tensor argmax(const Tensor& a, int64_t dim, bool keepdim = false);
Tensor cumsum(const Tensor& a, int64_t dim);

}  // namespace moon
