// A small training step built from the ops a model uses, shared by the `cuda` and `bf16` suites:
// linear -> layer_norm -> gelu -> attention -> linear -> cross_entropy. The weights are f32 masters; with
// dt = bf16 the step runs on bf16 copies of them and of the input (bf16 activations), and the gradients
// land in f32 on the masters. Returns the gradients of the three weights.
#pragma once

#include <vector>

#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/index.h"
#include "ops/loss.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "runtime/rng.h"

namespace moon::test {

inline std::vector<Tensor> tiny_step(Device dev, uint64_t seed, DType dt = DType::F32) {
  Generator g(seed);
  const int64_t B = 2, H = 2, T = 9, D = 16, V = 11;
  Tensor x = randn({B, T, D}, g, DType::F32, dev);                                   // (B, T, D)
  Tensor w1 = randn({3 * D, D}, g, DType::F32, dev).set_requires_grad();              // (3D, D)
  Tensor ln_w = ones({3 * D}, DType::F32, dev).set_requires_grad();                   // (3D)
  Tensor ln_b = zeros({3 * D}, DType::F32, dev);                                      // (3D)
  Tensor w2 = randn({V, D}, g, DType::F32, dev).set_requires_grad();                  // (V, D)
  Tensor targets = randint({B * T}, g, 0, V, DType::I64, dev);                       // (B T)
  Tensor h = gelu(layer_norm(linear(x.to(dt), w1.to(dt)), ln_w.to(dt), ln_b.to(dt)));  // (B, T, 3D)
  std::vector<Tensor> qkv = chunk(h, 3, 2);                                           // 3 x (B, T, D)
  auto heads = [&](const Tensor& t) { return t.reshape({B, T, H, D / H}).transpose(1, 2); };  // (B, H, T, D/H)
  AttentionOptions opt;
  opt.causal = true;
  Tensor a = scaled_dot_product_attention(heads(qkv[0]), heads(qkv[1]), heads(qkv[2]), opt);  // (B, H, T, D/H)
  Tensor logits = linear(a.transpose(1, 2).reshape({B * T, D}), w2.to(dt));          // (B T, V)
  Tensor loss = cross_entropy(logits, targets);                                       // () f32
  loss.backward();
  return {w1.grad(), ln_w.grad(), w2.grad()};
}

}  // namespace moon::test
