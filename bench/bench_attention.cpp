// Attention GFLOP/s: moon::scaled_dot_product_attention forward and backward (through autograd) for
// B=1, H=8, T=512/1024, D=64/128, causal or not. Flops: 4*B*H*Tq*Tk*D forward, 2.5x that backward, halved
// when causal.
//
// Ceiling (peer): the same two products done unfused by direct oneDNN batched matmul primitives,
// S (BH,Tq,Tk) = Q K^T and O (BH,Tq,D) = S V, with no softmax (4*B*H*Tq*Tk*D flops, never halved): the GEMM
// rate oneDNN reaches on these shapes. ratio = our attention rate / that GEMM rate.
#include <dnnl.hpp>

#include <string>

#include "bench/bench_common.h"
#include "ops/attention.h"
#include "runtime/autograd.h"
#include "runtime/tensor.h"

namespace moon::bench {
namespace {

struct AttnShape {
  int64_t B, H, T, D;
};

// Q K^T then S V with oneDNN on plain row-major buffers; primitives built once.
struct DirectAttentionGemms {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::matmul qk, sv;
  dnnl::memory q, kt, s, v, o;
  Tensor s_buf, o_buf;

  DirectAttentionGemms(const AttnShape& a, const Tensor& qt, const Tensor& kt_, const Tensor& vt) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const int64_t BH = a.B * a.H, T = a.T, D = a.D;
    s_buf = empty({BH, T, T});  // (BH, Tq, Tk)
    o_buf = empty({BH, T, D});  // (BH, Tq, D)
    dnnl::memory::desc q_md({BH, T, D}, dt::f32, tag::abc);
    dnnl::memory::desc kt_md({BH, D, T}, dt::f32, tag::acb);  // K^T: K (BH, Tk, D) row-major read transposed
    dnnl::memory::desc s_md({BH, T, T}, dt::f32, tag::abc);
    dnnl::memory::desc v_md({BH, T, D}, dt::f32, tag::abc);
    dnnl::memory::desc o_md({BH, T, D}, dt::f32, tag::abc);
    qk = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(q_md, kt_md, s_md), eng));
    sv = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(s_md, v_md, o_md), eng));
    q = dnnl::memory(q_md, eng, qt.raw_data());
    kt = dnnl::memory(kt_md, eng, kt_.raw_data());
    s = dnnl::memory(s_md, eng, s_buf.raw_data());
    v = dnnl::memory(v_md, eng, vt.raw_data());
    o = dnnl::memory(o_md, eng, o_buf.raw_data());
  }
  void run() {
    qk.execute(strm, {{DNNL_ARG_SRC, q}, {DNNL_ARG_WEIGHTS, kt}, {DNNL_ARG_DST, s}});
    sv.execute(strm, {{DNNL_ARG_SRC, s}, {DNNL_ARG_WEIGHTS, v}, {DNNL_ARG_DST, o}});
    strm.wait();
  }
};

void bm_attention(benchmark::State& state, AttnShape a, bool causal, bool backward) {
  Tensor q = randn({a.B, a.H, a.T, a.D}), k = randn({a.B, a.H, a.T, a.D}), v = randn({a.B, a.H, a.T, a.D});
  DirectAttentionGemms direct(a, q, k, v);
  AttentionOptions opt;
  opt.causal = causal;
  const double full = 4.0 * a.B * a.H * a.T * a.T * a.D;
  const double fwd = causal ? full / 2 : full;
  if (!backward) {
    NoGradGuard ng;
    Tensor out;
    run_paired(
        state, fwd, full, "GFLOP", [&] { direct.run(); },
        [&] {
          out = Tensor();
          out = scaled_dot_product_attention(q, k, v, opt);
        },
        [] {});
    return;
  }
  q.set_requires_grad();
  k.set_requires_grad();
  v.set_requires_grad();
  Tensor out = scaled_dot_product_attention(q, k, v, opt);  // (B, H, T, D), graph kept across iterations
  Tensor g = randn(out.shape());
  run_paired(
      state, 2.5 * fwd, full, "GFLOP", [&] { direct.run(); }, [&] { out.backward(g, /*retain_graph=*/true); },
      [&] {
        q.zero_grad();
        k.zero_grad();
        v.zero_grad();
      });
}

const int kRegistered = [] {
  for (bool backward : {false, true})
    for (int64_t D : {64, 128})
      for (int64_t T : {512, 1024})
        for (bool causal : {false, true}) {
          const AttnShape a{1, 8, T, D};
          const std::string name = std::string(backward ? "attention_bwd" : "attention_fwd") + (causal ? "_causal" : "") +
                                   "/B1xH8xT" + std::to_string(T) + "xD" + std::to_string(D);
          benchmark::RegisterBenchmark(name.c_str(), bm_attention, a, causal, backward)
              ->UseManualTime()
              ->Unit(benchmark::kMillisecond);
        }
  return 0;
}();

}  // namespace
}  // namespace moon::bench
