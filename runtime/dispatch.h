// Per-device kernel tables. Each op keeps one table of function pointers, one slot per device type; the
// CPU slot is filled where the op is defined, the CUDA slot by the CUDA backend. A call on a device with
// an empty slot is a moon::Error naming the op and the device.
#pragma once

#include "runtime/device.h"
#include "runtime/error.h"

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
