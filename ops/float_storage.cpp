#include "ops/float_storage.h"

#include "runtime/autograd.h"

namespace moon {

void check_float_storage(const char* op, const Tensor& t, const char* what) {
  MOON_CHECK(is_float_storage(t.dtype()), op, ": expected an f32 or bf16 ", what, ", got ", t.desc(),
             "; convert with .to(DType::F32) or .to(DType::BF16)");
}

void check_same_dtype(const char* op, const Tensor& ref, const Tensor& other, const char* what) {
  if (!other.defined()) return;
  MOON_CHECK(other.dtype() == ref.dtype(), op, ": ", what, " ", other.desc(), " must have the dtype of ", ref.desc(),
             " (all floating operands share one dtype); convert with .to(DType::", ref.dtype() == DType::BF16 ? "BF16" : "F32",
             ")");
}

Tensor f32_input(const Tensor& t) {
  if (!t.defined() || t.dtype() == DType::F32) return t;
  NoGradGuard ng;
  return t.to(DType::F32).contiguous();
}

F32Output::F32Output(const Tensor& target, bool read_target) : target_(target) {
  if (!target.defined() || target.dtype() == DType::F32) {
    work_ = target;
    return;
  }
  NoGradGuard ng;
  work_ = read_target ? target.to(DType::F32).contiguous() : empty(target.shape(), DType::F32, target.device());
}

void F32Output::commit() const {
  if (!target_.defined() || work_.same(target_)) return;
  NoGradGuard ng;
  Tensor target = target_;  // a handle to the same storage
  target.copy_(work_);
}

}  // namespace moon
