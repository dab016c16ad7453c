// concat, stack, split and chunk: block copies along one dimension (any dtype). concat's backward splits
// the gradient; split's backward concatenates the pieces' gradients (zero-filled where a piece had none).
#include <cstring>
#include <numeric>

#include "ops/cuda/index_cuda.h"
#include "ops/index.h"
#include "ops/index_util.h"
#include "runtime/autograd.h"
#include "runtime/dispatch.h"

namespace moon {

namespace {

using namespace index_detail;

// dst[o * dst_stride .. + bytes) = src[o * src_stride .. + bytes) for o < rows: a strided block copy. `device`
// holds both buffers (the CUDA kernel launches on its stream).
void copy_blocks_cpu(Device /*device*/, void* dst, int64_t dst_stride, const void* src, int64_t src_stride,
                     int64_t rows, int64_t bytes) {
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
#pragma omp parallel for schedule(static) if (rows > 1 && rows * bytes > (1 << 18))
  for (int64_t o = 0; o < rows; ++o) std::memcpy(d + o * dst_stride, s + o * src_stride, static_cast<size_t>(bytes));
}

using CopyBlocksFn = void (*)(Device, void*, int64_t, const void*, int64_t, int64_t, int64_t);
KernelTable<CopyBlocksFn> g_copy_blocks{"concat/split", {copy_blocks_cpu, MOON_CUDA_KERNEL(cuda::copy_blocks)}};

std::string shapes_str(const std::vector<Tensor>& ts) {
  std::string s;
  for (size_t i = 0; i < ts.size(); ++i) s += (i ? ", " : "") + ts[i].desc();
  return s;
}

// Copies the pieces (outer, sizes[i], inner) into / out of the whole (outer, total, inner) along the middle
// dimension; `into_whole` picks the direction.
void move_pieces(const Tensor& whole, const std::vector<Tensor>& pieces, int64_t dim, bool into_whole) {
  const int64_t outer = outer_size(whole.shape(), dim), inner = inner_size(whole.shape(), dim);
  const int64_t es = static_cast<int64_t>(dtype_size(whole.dtype()));
  const int64_t whole_row = whole.size(dim) * inner * es;
  auto* base = static_cast<char*>(whole.raw_data());
  int64_t off = 0;
  const Device device = whole.device();
  const CopyBlocksFn fn = g_copy_blocks.get(device);
  for (const Tensor& p : pieces) {
    const int64_t bytes = p.size(dim) * inner * es;
    if (bytes > 0 && outer > 0) {
      if (into_whole)
        fn(device, base + off, whole_row, p.raw_data(), bytes, outer, bytes);
      else
        fn(device, p.raw_data(), bytes, base + off, whole_row, outer, bytes);
    }
    off += bytes;
  }
}

}  // namespace

Tensor concat(const std::vector<Tensor>& tensors, int64_t dim) {
  MOON_CHECK(!tensors.empty(), "concat: needs at least one tensor");
  const Tensor& t0 = tensors[0];
  MOON_CHECK(t0.defined(), "concat: tensor 0 is undefined");
  MOON_CHECK(t0.dim() >= 1, "concat: cannot concatenate 0-d tensors (", t0.desc(), "); use stack()");
  dim = wrap_dim(dim, t0.dim(), "concat");
  Shape out_shape = t0.shape();
  out_shape[dim] = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    MOON_CHECK(t.defined(), "concat: tensor ", i, " is undefined");
    MOON_CHECK(t.dtype() == t0.dtype() && t.device() == t0.device(), "concat: tensor ", i, " ", t.desc(),
               " differs in dtype or device from tensor 0 ", t0.desc(), "; convert with .to() first");
    bool ok = t.dim() == t0.dim();
    for (int64_t d = 0; ok && d < t.dim(); ++d) ok = d == dim || t.size(d) == t0.size(d);
    MOON_CHECK(ok, "concat: tensor ", i, " has shape ", t.shape_str(), " but tensor 0 has shape ", t0.shape_str(),
               "; all shapes must agree except along dimension ", dim, " (tensors: ", shapes_str(tensors), ")");
    out_shape[dim] += t.size(dim);
  }
  Tensor out = empty(out_shape, t0.dtype(), t0.device());
  {
    NoGradGuard ng;
    std::vector<Tensor> pieces;
    for (const Tensor& t : tensors) pieces.push_back(t.contiguous());
    move_pieces(out, pieces, dim, true);
  }
  if (needs_grad(tensors)) {
    std::vector<int64_t> sizes;
    std::vector<bool> want;
    for (const Tensor& t : tensors) {
      sizes.push_back(t.size(dim));
      want.push_back(t.requires_grad());
    }
    record_op("concat", tensors, {out}, [sizes, want, dim](const std::vector<Tensor>& g) {
      std::vector<Tensor> grads;
      int64_t off = 0;
      for (size_t i = 0; i < sizes.size(); ++i) {
        grads.push_back(want[i] ? g[0].slice(dim, off, off + sizes[i]).contiguous() : Tensor());
        off += sizes[i];
      }
      return grads;
    });
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  MOON_CHECK(!tensors.empty(), "stack: needs at least one tensor");
  for (size_t i = 0; i < tensors.size(); ++i) {
    MOON_CHECK(tensors[i].defined(), "stack: tensor ", i, " is undefined");
    MOON_CHECK(tensors[i].shape() == tensors[0].shape(), "stack: tensor ", i, " has shape ", tensors[i].shape_str(),
               " but tensor 0 has shape ", tensors[0].shape_str(), "; stack needs equal shapes (tensors: ",
               shapes_str(tensors), ")");
  }
  dim = wrap_dim(dim, tensors[0].dim() + 1, "stack");
  std::vector<Tensor> parts;
  for (const Tensor& t : tensors) parts.push_back(t.unsqueeze(dim));
  return concat(parts, dim);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  MOON_CHECK(x.defined(), "split: undefined input");
  MOON_CHECK(x.dim() >= 1, "split: cannot split a 0-d tensor ", x.desc());
  MOON_CHECK(!sizes.empty(), "split: needs at least one piece size for ", x.desc());
  dim = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  std::string list;
  for (int64_t s : sizes) {
    MOON_CHECK(s >= 0, "split: negative piece size ", s, " for ", x.desc());
    total += s;
    list += (list.empty() ? "" : ", ") + std::to_string(s);
  }
  MOON_CHECK(total == x.size(dim), "split: piece sizes (", list, ") sum to ", total, " but dimension ", dim, " of ",
             x.desc(), " has size ", x.size(dim));
  std::vector<Tensor> outs;
  for (int64_t s : sizes) {
    Shape sh = x.shape();
    sh[dim] = s;
    outs.push_back(empty(sh, x.dtype(), x.device()));
  }
  {
    NoGradGuard ng;
    move_pieces(x.contiguous(), outs, dim, false);
  }
  if (needs_grad({&x}))
    record_op("split", {x}, outs, [dim](const std::vector<Tensor>& g) { return std::vector<Tensor>{concat(g, dim)}; });
  return outs;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  MOON_CHECK(x.defined() && x.dim() >= 1, "chunk: needs a tensor with at least one dimension");
  dim = wrap_dim(dim, x.dim(), "chunk");
  MOON_CHECK(chunks >= 1 && x.size(dim) % chunks == 0, "chunk: dimension ", dim, " of ", x.desc(),
             " (size ", x.size(dim), ") cannot be split into ", chunks, " equal pieces; use split() with sizes");
  return split(x, std::vector<int64_t>(static_cast<size_t>(chunks), x.size(dim) / chunks), dim);
}

}  // namespace moon
