// Per-device kernel tables. Each op keeps one table of function pointers, one slot per device type; the
// CPU slot is filled where the op is defined, the CUDA slot by the CUDA backend. A call on a device with
// an empty slot is a moon::Error naming the op and the device.
#pragma once

#include "runtime/device.h"
#include "runtime/error.h"

// The CUDA slot of a kernel table: the CUDA kernel in a build with the CUDA backend, else empty. Op files
// write {my_op_cpu, MOON_CUDA_KERNEL(cuda::my_op)} and include the CUDA kernel's declaration header
// (ops/cuda/*_cuda.h, plain C++, safe to include in any build).
#ifdef MOON_CUDA
#define MOON_CUDA_KERNEL(fn) (fn)
#else
#define MOON_CUDA_KERNEL(fn) nullptr
#endif

namespace moon {

template <class Fn>
struct KernelTable {
  const char* op;
  Fn slot[kNumDeviceTypes] = {};

  Fn get(Device d) const {
    Fn f = slot[static_cast<int>(d.type)];
    MOON_CHECK(f, op, ": no kernel for device ", d.str(),
               d.is_cuda() ? " in this build (the CUDA backend provides it; build with -DMOON_CUDA=ON)" : "");
    return f;
  }
  bool has(DeviceType t) const { return slot[static_cast<int>(t)] != nullptr; }
};

}  // namespace moon
