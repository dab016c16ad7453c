// Memory-bound ops in GB/s (bytes read + written, minimum traffic), each next to the parallel memcpy ceiling
// moving the same byte count in the same iteration:
//   forward  (softmax, layer_norm, rms_norm, gelu): read x, write y          -> 2 * N * 4 bytes
//   backward (through autograd, graph kept):          read x|y and dy, write dx -> 3 * N * 4 bytes
// (the (C)-sized weight, bias, dweight and dbias and the per-row statistics are left out of the count).
// The last-level cache is evicted (untimed) before every timed call of either: both run from DRAM.
#include <functional>
#include <string>

#include "bench/bench_common.h"
#include "bench/bench_memory.h"
#include "ops/elementwise.h"
#include "ops/norm.h"
#include "runtime/autograd.h"
#include "runtime/tensor.h"

namespace moon::bench {
namespace {

enum class Op { Softmax, LayerNorm, RmsNorm, Gelu };
const char* op_name(Op op) {
  switch (op) {
    case Op::Softmax: return "softmax";
    case Op::LayerNorm: return "layer_norm";
    case Op::RmsNorm: return "rms_norm";
    case Op::Gelu: return "gelu";
  }
  return "?";
}

void bm_membound(benchmark::State& state, Op op, int64_t rows, int64_t C, bool backward) {
  Tensor x = randn({rows, C});  // (rows, C)
  Tensor w = randn({C}), b = randn({C});  // (C)
  const int64_t n = rows * C;
  const double bytes = (backward ? 3.0 : 2.0) * n * 4;
  ParallelMemcpy mc(static_cast<int64_t>(bytes / 2));
  auto forward = [&] {
    switch (op) {
      case Op::Softmax: return softmax(x, -1);
      case Op::LayerNorm: return layer_norm(x, w, b);
      case Op::RmsNorm: return rms_norm(x, w);
      case Op::Gelu: return gelu(x);
    }
    return Tensor();
  };
  if (!backward) {
    NoGradGuard ng;
    Tensor y;
    run_paired(
        state, bytes, "GB", [&] { mc.copy(); },
        [&] {
          y = Tensor();
          y = forward();
        },
        [] { evict_caches(); });
    return;
  }
  x.set_requires_grad();
  w.set_requires_grad();
  b.set_requires_grad();
  Tensor y = forward();  // (rows, C), graph kept across iterations
  Tensor g = randn({rows, C});
  run_paired(
      state, bytes, "GB", [&] { mc.copy(); }, [&] { y.backward(g, /*retain_graph=*/true); },
      [&] {
        evict_caches();
        x.zero_grad();
        w.zero_grad();
        b.zero_grad();
      });
}

const int kRegistered = [] {
  for (bool backward : {false, true})
    for (Op op : {Op::Softmax, Op::LayerNorm, Op::RmsNorm, Op::Gelu})
      for (auto [r, c] : {std::pair<int64_t, int64_t>{4096, 896}, {1024, 4864}}) {
        const std::string name = std::string(op_name(op)) + (backward ? "_bwd/" : "_fwd/") + std::to_string(r) + "x" +
                                 std::to_string(c);
        benchmark::RegisterBenchmark(name.c_str(), bm_membound, op, r, c, backward)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
  return 0;
}();

}  // namespace
}  // namespace moon::bench
