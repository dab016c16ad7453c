#include "runtime/device.h"

#include "runtime/error.h"

namespace moon {

#ifndef MOON_CUDA
int cuda_device_count() { return 0; }
void cuda_synchronize(Device device) {
  fail("cuda_synchronize: ", device.str(), " needs the CUDA backend; this build has none (configure with -DMOON_CUDA=ON)");
}
std::string cuda_device_name(int) { return "none (built without CUDA)"; }
#endif

bool cuda_available() { return cuda_device_count() > 0; }

}  // namespace moon
