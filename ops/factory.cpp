// Tensor factories: constant fills, ranges, random draws (Philox) and copies of host vectors.
#include <cmath>
#include <cstring>

#include "runtime/copy.h"
#include "runtime/dispatch.h"
#include "runtime/rng.h"

namespace moon {

namespace {
// Philox draws into a float buffer on the device: the CPU versions ignore the device index.
using DrawFn = void (*)(float* out, int64_t n, uint64_t seed, uint64_t offset, float a, float b, int device);
void uniform_cpu(float* out, int64_t n, uint64_t seed, uint64_t offset, float lo, float hi, int) {
  philox_uniform_cpu(out, n, seed, offset, lo, hi);
}
void normal_cpu(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float std, int) {
  philox_normal_cpu(out, n, seed, offset, mean, std);
}
KernelTable<DrawFn> g_uniform{"rand", {uniform_cpu, MOON_CUDA_KERNEL(philox_uniform_cuda)}};
KernelTable<DrawFn> g_normal{"randn", {normal_cpu, MOON_CUDA_KERNEL(philox_normal_cuda)}};
}  // namespace

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  fill_elements(t, value);
  return t;
}
Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype(), t.device()); }
Tensor scalar_tensor(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

Tensor arange(double start, double end, double step, DType dtype, Device device) {
  MOON_CHECK(step != 0, "arange: step must be nonzero");
  const int64_t n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((end - start) / step)));
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = start + static_cast<double>(i) * step;
  return from_vector(v, {n}, dtype, device);
}

Tensor rand(const Shape& shape, Generator& gen, double lo, double hi, DType dtype, Device device) {
  Tensor t = empty(shape, DType::F32, device.is_cuda() ? device : kCPU);
  const uint64_t offset = gen.reserve(static_cast<uint64_t>(t.numel()));
  g_uniform.get(device)(static_cast<float*>(t.raw_data()), t.numel(), gen.seed(), offset, static_cast<float>(lo),
                        static_cast<float>(hi), device.index);
  return t.to(device, dtype);
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, Device device) {
  Tensor t = empty(shape, DType::F32, device.is_cuda() ? device : kCPU);
  const uint64_t offset = gen.reserve(static_cast<uint64_t>(t.numel()));
  g_normal.get(device)(static_cast<float*>(t.raw_data()), t.numel(), gen.seed(), offset, 0.0f, 1.0f, device.index);
  return t.to(device, dtype);
}

Tensor randn(const Shape& shape, DType dtype, Device device) { return randn(shape, default_generator(), dtype, device); }

Tensor randint(const Shape& shape, Generator& gen, int64_t lo, int64_t hi, DType dtype, Device device) {
  MOON_CHECK(hi > lo, "randint: empty range [", lo, ", ", hi, ")");
  const int64_t n = shape_numel(shape);
  std::vector<int64_t> v(static_cast<size_t>(n));
  const uint64_t offset = gen.reserve(static_cast<uint64_t>(n));
  const uint64_t span = static_cast<uint64_t>(hi - lo);
  for (int64_t c = 0; c < (n + 3) / 4; ++c) {
    const auto r = philox4x32(offset + static_cast<uint64_t>(c), gen.seed());
    for (int64_t lane = 0; lane < 4 && c * 4 + lane < n; ++lane)
      v[c * 4 + lane] = lo + static_cast<int64_t>(r[lane] % span);
  }
  return from_vector(v, shape, dtype, device);
}

template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, DType dtype, Device device) {
  MOON_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
             " values do not fill shape ", shape_str(shape));
  DType src_dtype = DType::F32;
  if constexpr (std::is_same_v<T, int32_t>) src_dtype = DType::I32;
  else if constexpr (std::is_same_v<T, int64_t>) src_dtype = DType::I64;
  else if constexpr (std::is_same_v<T, uint8_t>) src_dtype = DType::U8;
  else if constexpr (std::is_same_v<T, uint16_t>) src_dtype = DType::BF16;
  Tensor host = empty(shape, src_dtype, kCPU);
  if constexpr (std::is_same_v<T, double>) {
    float* p = host.data<float>();
    for (size_t i = 0; i < values.size(); ++i) p[i] = static_cast<float>(values[i]);
  } else if (!values.empty()) {
    std::memcpy(host.raw_data(), values.data(), values.size() * sizeof(T));
  }
  return host.to(device, dtype);
}

template Tensor from_vector(const std::vector<float>&, const Shape&, DType, Device);
template Tensor from_vector(const std::vector<double>&, const Shape&, DType, Device);
template Tensor from_vector(const std::vector<int32_t>&, const Shape&, DType, Device);
template Tensor from_vector(const std::vector<int64_t>&, const Shape&, DType, Device);
template Tensor from_vector(const std::vector<uint8_t>&, const Shape&, DType, Device);
template Tensor from_vector(const std::vector<uint16_t>&, const Shape&, DType, Device);

Tensor from_vector(const std::vector<float>& values, const Shape& shape, Device device) {
  return from_vector<float>(values, shape, DType::F32, device);
}

}  // namespace moon
