// Where a tensor lives. CUDA is a dispatch slot from day one; its kernels come with the CUDA backend.
#pragma once

#include <string>

namespace moon {

enum class DeviceType : uint8_t { CPU = 0, CUDA = 1 };
constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device&) const = default;
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  std::string str() const { return type == DeviceType::CPU ? "cpu" : "cuda:" + std::to_string(index); }
};

inline constexpr Device kCPU{DeviceType::CPU, 0};
inline Device cuda_device(int index = 0) { return Device{DeviceType::CUDA, index}; }

bool cuda_available();  // built with MOON_CUDA and at least one device present
int cuda_device_count();
// Waits for all work queued on the device's stream; a fault in an earlier kernel is raised here.
void cuda_synchronize(Device device = cuda_device());
std::string cuda_device_name(int index = 0);  // e.g. "NVIDIA H100 80GB HBM3"

}  // namespace moon
