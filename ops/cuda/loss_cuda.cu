// CUDA cross_entropy: one fused kernel per row (online max / sum-exp / sum of logits, the smoothed NLL, and
// the softmax written once for backward), a single-block fixed-order sum of the row losses in double (the
// CPU sums in double too), and the backward written from the saved softmax.
// bf16 activations: the logits and dx are stored as T (float or __nv_bfloat16), loaded to f32 and computed as
// in the f32 kernels; the saved softmax, the row losses and the loss stay f32; dx is rounded once on store.
// So a bf16 result is the f32 kernels' result on the widened logits, dx rounded (bit for bit).
#include "ops/cuda/loss_cuda.h"

#include "ops/cuda/row_util.cuh"
#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

namespace {

// row_loss[i] = lse(x_i) - (1-s) x_i[t_i] - s * sum(x_i) / C (0 on ignored rows); probs[i] = softmax(x_i)
// when probs != nullptr. Per element: 1-2 exp + ~5 FLOP; bytes: 4 (stats read) + 8 with probs (re-read, write).
template <bool kWarpRow, int kW, class T>
__global__ void cross_entropy_kernel(const T* __restrict__ x, int64_t N, int64_t C, int64_t row_stride,
                                     const int64_t* __restrict__ targets, int64_t target_stride, int64_t ignore_index,
                                     float smoothing, float* __restrict__ probs, float* __restrict__ row_loss) {
  using R = Row<kWarpRow>;
  __shared__ float scratch[32];
  const int64_t groups = C / kW;
  for (int64_t r = R::first(); r < N; r += R::step()) {
    const int64_t t = targets[r * target_stride];
    if (t == ignore_index) {  // uniform over the row's threads
      if (R::lane() == 0) row_loss[r] = 0.0f;
      continue;
    }
    const T* xr = x + r * row_stride;
    const RowSoftmaxStats st = row_softmax_stats<kWarpRow, kW, true>(xr, groups, scratch);
    const float M = st.max, S = st.sum_exp, SX = st.sum;
    if (R::lane() == 0) {
      const float lse = M + logf(S);
      // As the CPU: lse - (1-s) x[t] - s (sum / C), each product rounded on its own.
      const float a = __fmul_rn(1.0f - smoothing, to_float(xr[t]));
      const float b = __fmul_rn(smoothing, SX / static_cast<float>(C));
      row_loss[r] = __fsub_rn(__fsub_rn(lse, a), b);
    }
    if (probs) {
      const float inv = 1.0f / S;
      float* pr = probs + r * C;
      for (int64_t gi = R::lane(); gi < groups; gi += R::width()) {
        float v[kW];
        load<kW>(xr + gi * kW, v);
        for (int k = 0; k < kW; ++k) v[k] = expf(v[k] - M) * inv;
        store<kW>(pr + gi * kW, v);
      }
    }
  }
}

// loss[0] = (sum_i row_loss[i] in double, fixed order) / count, or 0 when count == 0. One block of
// kSumThreads. Per row: 1 add, 4 bytes.
constexpr int kSumThreads = 512;
__global__ void loss_sum_kernel(const float* __restrict__ row_loss, int64_t N, int64_t count,
                                float* __restrict__ loss) {
  __shared__ double sh[kSumThreads];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += kSumThreads) acc += static_cast<double>(row_loss[i]);
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kSumThreads / 2; half > 0; half >>= 1) {
    if (static_cast<int>(threadIdx.x) < half) sh[threadIdx.x] += sh[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) loss[0] = count > 0 ? static_cast<float>(sh[0] / static_cast<double>(count)) : 0.0f;
}

// dx[i, j] = (probs[i, j] - s/C) * scale, minus (1-s) * scale at j = t_i; 0 on ignored rows. Groups of kW
// elements never straddle a row (C % kW == 0). Per element: 2 FLOP, 8 bytes (probs read, dx written).
template <int kW, class T>
__global__ void cross_entropy_backward_kernel(const float* __restrict__ probs, const int64_t* __restrict__ targets,
                                              int64_t target_stride, int64_t N, int64_t C, int64_t ignore_index,
                                              float smoothing, float scale, T* __restrict__ dx) {
  const float u = smoothing / static_cast<float>(C);
  const float hit = __fmul_rn(1.0f - smoothing, scale);
  const int64_t groups = N * C / kW;
  for (int64_t gi = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; gi < groups;
       gi += int64_t{gridDim.x} * blockDim.x) {
    const int64_t e = gi * kW, r = e / C, j0 = e - r * C;
    const int64_t t = targets[r * target_stride];
    float v[kW];
    if (t == ignore_index) {
      for (int k = 0; k < kW; ++k) v[k] = 0.0f;
    } else {
      load<kW>(probs + e, v);
      for (int k = 0; k < kW; ++k) {
        v[k] = __fmul_rn(__fsub_rn(v[k], u), scale);
        if (j0 + k == t) v[k] = __fsub_rn(v[k], hit);
      }
    }
    store<kW>(dx + e, v);
  }
}

template <bool kWarpRow, int kW>
struct CrossEntropyLaunch {  // launch adapter for launch_rows
  template <class... A>
  static void launch(dim3 g, dim3 b, cudaStream_t s, A... a) {
    cross_entropy_kernel<kWarpRow, kW><<<g, b, 0, s>>>(a...);
  }
};

}  // namespace

void cross_entropy(const Tensor& logits, const Tensor& targets, const CeParams& p, const Tensor& loss,
                   const Tensor& probs, int64_t count) {
  const int64_t N = logits.size(0), C = logits.size(1);
  DeviceGuard guard(logits.device());
  const cudaStream_t s = stream_of(logits);
  Tensor row_loss = empty({N}, DType::F32, logits.device());
  if (N > 0) {
    visit_float("cross_entropy", logits, [&](auto tag) {
      using T = decltype(tag);
      const T* xp = cptr<T>(logits);
      float* pp = probs.defined() ? ptr<float>(probs) : nullptr;
      const int64_t rs = logits.stride(0);
      const bool vec = C % 4 == 0 && rs % 4 == 0 && aligned(xp, kVecBytes<T>) && (!pp || aligned(pp, 16));
      const int64_t* tp = cptr<int64_t>(targets);
      const int64_t ts = targets.stride(0);
      float* lp = ptr<float>(row_loss);
      launch_rows<CrossEntropyLaunch>("cross_entropy_kernel", s, N, C, vec, xp, N, C, rs, tp, ts, p.ignore_index,
                                      p.smoothing, pp, lp);
    });
  }
  loss_sum_kernel<<<1, kSumThreads, 0, s>>>(N > 0 ? cptr<float>(row_loss) : nullptr, N, count, ptr<float>(loss));
  MOON_CUDA_LAUNCH_CHECK("loss_sum_kernel");
}

void cross_entropy_backward(const Tensor& probs, const Tensor& targets, const CeParams& p, float scale,
                            const Tensor& dx) {
  const int64_t N = probs.size(0), C = probs.size(1);
  if (N * C == 0) return;
  DeviceGuard guard(dx.device());
  visit_float("cross_entropy backward", dx, [&](auto tag) {
    using T = decltype(tag);
    const float* pp = cptr<float>(probs);
    T* dp = ptr<T>(dx);
    const bool vec = C % 4 == 0 && aligned(pp, 16) && aligned(dp, kVecBytes<T>);
    constexpr int kThreads = 256;
    const cudaStream_t s = stream_of(dx);
    const int64_t* tp = cptr<int64_t>(targets);
    if (vec)
      cross_entropy_backward_kernel<4, T><<<blocks_for(N * C / 4, kThreads), kThreads, 0, s>>>(
          pp, tp, targets.stride(0), N, C, p.ignore_index, p.smoothing, scale, dp);
    else
      cross_entropy_backward_kernel<1, T><<<blocks_for(N * C, kThreads), kThreads, 0, s>>>(
          pp, tp, targets.stride(0), N, C, p.ignore_index, p.smoothing, scale, dp);
    MOON_CUDA_LAUNCH_CHECK("cross_entropy_backward_kernel");
  });
}

}  // namespace moon::cuda
