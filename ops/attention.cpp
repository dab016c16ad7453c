// Fused scaled-dot-product attention: checks, output allocation and autograd around the tiled kernels of
// ops/cpu/attention_kernels.cpp and ops/cuda/attention_cuda.cu (FlashAttention-2 style; no (Tq x Tk) matrix
// is ever stored), chosen by the device of q, k, v.
//
// q, k, v are f32 or bf16 (one dtype); out and the input gradients take it, the log-sum-exp saved for the
// backward stays f32. The CPU kernels are f32-only: the CPU drivers widen bf16 operands and round the results
// once (ops/float_storage.h); the CUDA kernels read bf16 directly and compute in f32 the same way.
#include <cmath>

#include "ops/attention.h"
#include "ops/cpu/attention_kernels.h"
#include "ops/cpu/isa.h"
#include "ops/cuda/attention_cuda.h"
#include "ops/float_storage.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

float* f32_ptr(const Tensor& t) { return static_cast<float*>(t.raw_data()); }

void strides4(const Tensor& t, int64_t out[4]) {
  for (int d = 0; d < 4; ++d) out[d] = t.stride(d);
}

// The kernel's view of q, k, v, out and lse (all f32, any strides; lse may be undefined).
cpu::AttnTensors kernel_tensors(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse) {
  cpu::AttnTensors t{};
  t.q = f32_ptr(q);
  strides4(q, t.q_stride);
  t.k = f32_ptr(k);
  strides4(k, t.k_stride);
  t.v = f32_ptr(v);
  strides4(v, t.v_stride);
  t.out = f32_ptr(out);
  strides4(out, t.out_stride);
  t.lse = lse.defined() ? f32_ptr(lse) : nullptr;
  return t;
}

// Kernel tables, on tensors of the device (q, k, v, out, dout, dq, dk, dv of one dtype, f32 or bf16; lse f32).
using AttnForwardFn = void (*)(const cpu::AttnParams&, const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& out, const Tensor& lse);
using AttnBackwardFn = void (*)(const cpu::AttnParams&, const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& out, const Tensor& lse, const Tensor& dout, const Tensor& dq,
                                const Tensor& dk, const Tensor& dv);

// CPU: the f32 kernels on widened copies of bf16 operands (f32 ones as they are), results rounded once.
void attention_forward_cpu(const cpu::AttnParams& p, const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& out, const Tensor& lse) {
  const Tensor qf = f32_input(q), kf = f32_input(k), vf = f32_input(v);
  const F32Output of(out);
  MOON_ISA_SELECT(attention_forward)(p, kernel_tensors(qf, kf, vf, of.get(), lse));
  of.commit();
}
void attention_backward_cpu(const cpu::AttnParams& p, const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& out, const Tensor& lse, const Tensor& dout, const Tensor& dq,
                            const Tensor& dk, const Tensor& dv) {
  const Tensor qf = f32_input(q), kf = f32_input(k), vf = f32_input(v), of = f32_input(out), gf = f32_input(dout);
  const F32Output dqf(dq), dkf(dk), dvf(dv);
  cpu::AttnGradTensors gt{};
  gt.dout = f32_ptr(gf);
  strides4(gf, gt.dout_stride);
  gt.dq = dqf.data<float>();
  strides4(dqf.get(), gt.dq_stride);
  gt.dk = dkf.data<float>();
  strides4(dkf.get(), gt.dk_stride);
  gt.dv = dvf.data<float>();
  strides4(dvf.get(), gt.dv_stride);
  MOON_ISA_SELECT(attention_backward)(p, kernel_tensors(qf, kf, vf, of, lse), gt);
  dqf.commit();
  dkf.commit();
  dvf.commit();
}

const KernelTable<AttnForwardFn> g_attention_forward{
    "scaled_dot_product_attention", {attention_forward_cpu, MOON_CUDA_KERNEL(cuda::attention_forward)}};
const KernelTable<AttnBackwardFn> g_attention_backward{
    "scaled_dot_product_attention backward",
    {attention_backward_cpu, MOON_CUDA_KERNEL(cuda::attention_backward)}};

cpu::AttnParams make_params(const Tensor& q, const Tensor& k, const AttentionOptions& o) {
  cpu::AttnParams p{};
  p.B = q.size(0);
  p.Hq = q.size(1);
  p.Tq = q.size(2);
  p.D = q.size(3);
  p.Hkv = k.size(1);
  p.Tk = k.size(2);
  p.scale = static_cast<float>(o.scale > 0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(p.D)));
  p.causal = o.causal;
  p.q_offset = o.q_offset;
  p.key_keep = o.key_keep.defined() ? static_cast<const uint8_t*>(o.key_keep.raw_data()) : nullptr;
  return p;
}

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o) {
  const char* op = "scaled_dot_product_attention";
  MOON_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, ": expected q (B, Hq, Tq, D), k and v (B, Hkv, Tk, D); got ",
             q.desc(), ", ", k.desc(), ", ", v.desc());
  check_float_storage(op, q, "q");
  check_same_dtype(op, q, k, "k");
  check_same_dtype(op, q, v, "v");
  MOON_CHECK(k.device() == q.device() && v.device() == q.device(), op, ": q, k, v must be on one device; got ",
             q.desc(), ", ", k.desc(), ", ", v.desc());
  MOON_CHECK(k.shape() == v.shape(), op, ": k ", k.desc(), " and v ", v.desc(), " must have the same shape");
  MOON_CHECK(k.size(0) == q.size(0) && k.size(3) == q.size(3), op, ": batch and head size of q ", q.desc(),
             " and k ", k.desc(), " differ");
  MOON_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0, op, ": kv heads (", k.size(1), ") must divide q heads (",
             q.size(1), ") for grouped-query attention");
  if (o.key_keep.defined()) {
    MOON_CHECK(o.key_keep.dtype() == DType::U8 && o.key_keep.shape() == Shape({k.size(0), k.size(2)}), op,
               ": key_keep must be a u8 (B, Tk) = (", k.size(0), ", ", k.size(2), ") mask, got ", o.key_keep.desc());
    MOON_CHECK(o.key_keep.device() == q.device(), op, ": key_keep ", o.key_keep.desc(), " must be on the device of q ",
               q.desc());
  }
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options) {
  check_inputs(q, k, v, options);
  AttentionOptions o = options;
  if (o.key_keep.defined()) o.key_keep = o.key_keep.contiguous();
  const cpu::AttnParams p = make_params(q, k, o);
  Tensor out = empty(q.shape(), q.dtype(), q.device());          // (B, Hq, Tq, D), q's dtype
  Tensor lse = empty({p.B, p.Hq, p.Tq}, DType::F32, q.device());  // (B, Hq, Tq) log-sum-exp per query, f32
  g_attention_forward.get(q.device())(p, q, k, v, out, lse);

  if (needs_grad({&q, &k, &v})) {
    const char* op = "scaled_dot_product_attention";
    SavedTensor sq(q, op), sk(k, op), sv(v, op), so(out, op), sl(lse, op), sm(o.key_keep, op);
    AttentionOptions saved_opts = o;
    saved_opts.key_keep = Tensor();
    record_op(op, {q, k, v}, {out}, [sq, sk, sv, so, sl, sm, saved_opts](const std::vector<Tensor>& g) {
      AttentionOptions opts = saved_opts;
      if (sm.defined()) opts.key_keep = sm.get();
      const Tensor &q = sq.get(), &k = sk.get(), &v = sv.get(), &out = so.get(), &lse = sl.get();
      const cpu::AttnParams p = make_params(q, k, opts);
      Tensor dout = g[0].contiguous();
      Tensor dq = empty(q.shape(), q.dtype(), q.device());  // (B, Hq, Tq, D), the inputs' dtype
      Tensor dk = empty(k.shape(), k.dtype(), k.device());  // (B, Hkv, Tk, D)
      Tensor dv = empty(v.shape(), v.dtype(), v.device());  // (B, Hkv, Tk, D)
      MOON_CHECK(dout.device() == q.device() && dout.dtype() == q.dtype() && dout.shape() == q.shape(),
                 "scaled_dot_product_attention backward: expected a gradient like the output ", out.desc(),
                 ", got ", dout.desc());
      g_attention_backward.get(q.device())(p, q, k, v, out, lse, dout, dq, dk, dv);
      return std::vector<Tensor>{dq, dk, dv};
    });
  }
  return out;
}

}  // namespace moon
