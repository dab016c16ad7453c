#include "runtime/cuda/kernel_util.cuh"

namespace moon::cuda {

Indexer make_indexer(const Shape& shape, const Strides& strides) {
  return merge_dims(shape, {&strides})[0];
}

std::vector<Indexer> merge_dims(const Shape& shape, const std::vector<const Strides*>& views) {
  const size_t nv = views.size();
  Shape sizes;
  std::vector<Strides> st(nv);
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    sizes.push_back(shape[d]);
    for (size_t v = 0; v < nv; ++v) st[v].push_back((*views[v])[d]);
  }
  // Merge dimension d into d + 1 (inner) where stride[d] == stride[d+1] * size[d+1] in every view.
  for (int64_t d = static_cast<int64_t>(sizes.size()) - 2; d >= 0; --d) {
    bool ok = true;
    for (size_t v = 0; v < nv && ok; ++v) ok = st[v][d] == st[v][d + 1] * sizes[d + 1];
    if (!ok) continue;
    sizes[d + 1] *= sizes[d];
    sizes.erase(sizes.begin() + d);
    for (size_t v = 0; v < nv; ++v) st[v].erase(st[v].begin() + d);
  }
  MOON_CHECK(static_cast<int>(sizes.size()) <= kMaxDims, "cuda: a view with ", sizes.size(),
             " non-mergeable dimensions exceeds the kernel limit of ", kMaxDims);
  std::vector<Indexer> out(nv);
  for (size_t v = 0; v < nv; ++v) {
    out[v].ndim = static_cast<int>(sizes.size());
    for (size_t d = 0; d < sizes.size(); ++d) {
      out[v].size[d] = sizes[d];
      out[v].stride[d] = st[v][d];
    }
  }
  return out;
}

}  // namespace moon::cuda
