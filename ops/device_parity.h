// Backend parity: one registered op run on the CPU and on another device (CUDA) from the same random case,
// forward and backward, compared by normalised mean squared error
//   nmse(ours, cpu) = sum (ours - cpu)^2 / max(sum cpu^2, tiny)
// with a tolerance per dtype. Integer outputs (argmax, topk indices, comparisons) must match exactly.
// New device memory is poisoned (NaN) and guarded while the op runs, so an output element left unwritten or
// a write past the end of a buffer fails the check and names the tensor.
// Used by the `cuda` test suite (tests/test_cuda.cpp) and by `moon selftest --device cuda`.
#pragma once

#include <string>

#include "ops/registry.h"

namespace moon {

struct ParityResult {
  std::string op, desc;
  int64_t n = 0;
  DType dtype = DType::F32;  // the floating inputs' dtype in this run
  bool ok = true;
  bool skipped = false;      // the op does not take this dtype on the CPU either (reason in message)
  double fwd_nmse = 0, grad_nmse = 0;  // worst over outputs / over input gradients
  std::string message;       // the first failure, naming the output or input gradient
};

struct ParityOptions {
  DType dtype = DType::F32;  // F32, or BF16: floating inputs converted to bf16 where the op accepts them
  double f32_tol = 1e-9;     // nmse tolerance for f32 runs
  double bf16_tol = 1e-4;    // nmse tolerance for bf16 runs
  bool gradients = true;
};

ParityResult check_op_parity(const OpInfo& op, int64_t n, uint64_t seed, Device device, const ParityOptions& options = {});

// sum (ours - ref)^2 / max(sum ref^2, tiny) over two same-shape tensors on any devices; integer tensors give 0
// when equal, else infinity, as do NaN or infinity mismatches. `where`, if given, describes the mismatch.
double normalised_mse(const Tensor& ours, const Tensor& ref, std::string* where = nullptr);

// Same shape, dtype and bytes (tensors on any devices; two undefined tensors are equal).
bool bitwise_equal(const Tensor& a, const Tensor& b);

// bf16 on the CPU: the case run with bf16 inputs against the same values held in f32, forward and backward.
// Floating outputs must be bf16 (unless the op declares f32 outputs, as losses do), input gradients must have
// their input's dtype, and every value must agree by nmse <= tol (the bf16 rounding of results and of
// intermediate gradients). A CPU op that refuses bf16 fails, naming the error.
ParityResult check_bf16_consistency(const OpInfo& op, int64_t n, uint64_t seed, double tol = 1e-4);

// The same case's gradients computed twice on `device`: true if they are bitwise identical (determinism).
bool op_backward_is_deterministic(const OpInfo& op, int64_t n, uint64_t seed, Device device, std::string* why);

}  // namespace moon
