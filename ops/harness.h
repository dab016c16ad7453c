// The op-test harness: for one registered op and one size, generates a random case and checks
//   1. the forward against the double-precision reference, with poisoned (NaN-filled) output memory;
//   2. the same op on non-contiguous (strided) views of the inputs;
//   3. the backward against central finite differences of the reference, through a random projection.
// Used by the doctest suite (tests/test_ops_registry.cpp) and by `moon selftest`.
#pragma once

#include <string>

#include "ops/registry.h"

namespace moon {

struct OpCheckResult {
  std::string op;
  std::string desc;       // the case's parameters
  int64_t n = 0;          // the size hint
  bool ok = true;
  double fwd_err = 0;     // worst |ours - ref| / (1 + |ref|) over outputs
  double strided_err = 0; // worst difference between strided-input and contiguous-input results
  double grad_err = 0;    // worst |analytic - numeric| / (1 + |numeric|)
  bool grad_checked = false;
  std::string message;    // the first failure, naming the output or input and the element
};

struct HarnessOptions {
  bool noncontiguous = true;
  bool gradients = true;
  int max_fd_elements = 16;  // finite-difference probes per differentiable input
};

OpCheckResult check_op(const OpInfo& op, int64_t n, uint64_t seed, const HarnessOptions& options = {});

// A copy of t that is a strided view (its last dimension padded by one element in storage).
Tensor make_noncontiguous(const Tensor& t);

}  // namespace moon
