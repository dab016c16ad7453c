// Shared plumbing of the elementwise op layer (ops/binary.cpp, ops/unary.cpp, ops/elementwise_select.cpp):
// operand checks, broadcasting views, kernel lookup by device, and the CPU drivers that pick a flat or a
// per-row kernel path. Internal to the elementwise family.
#pragma once

#include <algorithm>
#include <array>

#include "ops/cpu/broadcast.h"
#include "ops/cpu/elementwise_kernels.h"
#include "ops/cpu/isa.h"
#include "ops/float_storage.h"
#include "runtime/dispatch.h"
#include "runtime/tensor.h"

namespace moon::elementwise {

// Throws unless a and b live on the same device.
inline void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  MOON_CHECK(a.device() == b.device(), op, ": operands are on different devices: ", a.desc(), " and ", b.desc(),
             "; move one with .to(device)");
}

// t broadcast to `shape` (stride 0 on broadcast dimensions), without autograd: for handing to kernels.
inline Tensor expand_view(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return make_view(t, t.shape(), t.strides(), t.offset());
  const size_t lead = shape.size() - t.shape().size();
  Strides st(shape.size(), 0);
  for (size_t i = lead; i < shape.size(); ++i) st[i] = t.shape()[i - lead] == shape[i] ? t.strides()[i - lead] : 0;
  return make_view(t, shape, st, t.offset());
}

// An operand expanded to some shape, as f32 for the CPU kernels: t itself when f32 (or not floating), else
// its distinct elements (the dimensions of stride 0 kept at size 1) widened into a contiguous f32 copy and
// expanded back to t's shape, so a broadcast operand stays broadcast (flat_step 0 for one value) instead of
// being materialised at full size.
inline Tensor f32_view(const Tensor& t) {
  if (!t.defined() || t.dtype() != DType::BF16) return t;
  Shape compact = t.shape();
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.stride(d) == 0) compact[static_cast<size_t>(d)] = 1;
  const Tensor wide = f32_input(make_view(t, compact, t.strides(), t.offset()));  // contiguous f32
  return expand_view(wide, t.shape());
}

// How a kernel can walk an (expanded) operand as one flat run: 1 = dense row-major, 0 = one broadcast
// value, -1 = neither (walk it row by row).
inline int flat_step(const Tensor& t) {
  if (t.is_contiguous()) return 1;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.size(d) != 1 && t.stride(d) != 0) return -1;
  return 0;
}

// Calls f(begin, count) over [0, n) in chunks, across OpenMP threads when n is big enough to pay for them.
template <class F>
void parallel_chunks(int64_t n, F&& f) {
  constexpr int64_t kChunk = 1 << 14;  // elements per task: a multiple of every vector width
  if (n <= 2 * kChunk) {
    if (n > 0) f(int64_t{0}, n);
    return;
  }
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk;
    f(begin, std::min(kChunk, n - begin));
  }
}

// Walks two operands expanded to `shape` (the output's, contiguous) and calls
//   run(a_offset, a_step, b_offset, b_step, out_offset, n)
// once per flat chunk when both operands are flat, else once per broadcast row.
template <class Run>
void for_each_binary_run(const Shape& shape, const Tensor& a, const Tensor& b, Run&& run) {
  const int fa = flat_step(a), fb = flat_step(b);
  if (fa >= 0 && fb >= 0) {
    parallel_chunks(shape_numel(shape), [&](int64_t i, int64_t n) { run(i * fa, fa, i * fb, fb, i, n); });
    return;
  }
  cpu::for_each_broadcast_row<2>(shape, {&a.strides(), &b.strides()},
                                 [&](int64_t out_off, const std::array<int64_t, 2>& off, int64_t n,
                                     const std::array<int64_t, 2>& step) { run(off[0], step[0], off[1], step[1], out_off, n); });
}

// The kernel of `table` for `device`, or a moon::Error naming `op` and the device.
template <class Fn>
Fn kernel_for(const KernelTable<Fn>& table, const char* op, Device device) {
  KernelTable<Fn> named = table;
  named.op = op;
  return named.get(device);
}

}  // namespace moon::elementwise
