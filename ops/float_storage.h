// bf16 activations: which floating storage types the ops take, and how the CPU runs bf16 tensors.
//
// Every differentiable op takes f32 or bf16 tensors. All floating operands of one call share a dtype (a
// model in bf16 keeps f32 master weights and hands the op a bf16 copy: w.to(DType::BF16), which autograd
// differentiates back to the f32 weight). The op computes in f32 and rounds its result to the operands'
// dtype once; saved statistics (layer_norm's mean/rstd, attention's log-sum-exp, a loss) stay f32, and input
// gradients come back in their input's dtype.
//
// The CPU kernels are f32-only: a CPU driver widens its bf16 inputs with f32_input() and computes into an
// F32Output, whose commit() rounds into the bf16 destination. The CUDA kernels are templated on the storage
// type and round the same f32 values on store (runtime/cuda/kernel_util.cuh), so the two devices agree.
#pragma once

#include "runtime/tensor.h"

namespace moon {

// f32 or bf16.
inline bool is_float_storage(DType t) { return t == DType::F32 || t == DType::BF16; }

// Throws unless t is f32 or bf16: "<op>: expected an f32 or bf16 <what>, got ...".
void check_float_storage(const char* op, const Tensor& t, const char* what = "tensor");
// Throws unless `other` (when defined) has the dtype of `ref`, naming both and how to convert.
void check_same_dtype(const char* op, const Tensor& ref, const Tensor& other, const char* what);

// t when undefined or f32, else a contiguous f32 copy of it (no autograd).
Tensor f32_input(const Tensor& t);

// Where an f32 kernel writes a result destined for `target`: target itself when it is f32 (or undefined),
// else a contiguous f32 scratch of its shape (holding target's values when `read_target`, for kernels that
// accumulate into their output); commit() then rounds the scratch into target.
class F32Output {
 public:
  explicit F32Output(const Tensor& target, bool read_target = false);
  const Tensor& get() const { return work_; }  // write here (f32, contiguous when target is)
  template <class T>
  T* data() const { return work_.defined() ? work_.data<T>() : nullptr; }
  void commit() const;  // copy into target (rounding) when they differ; no-op otherwise

 private:
  Tensor target_, work_;
};

}  // namespace moon
