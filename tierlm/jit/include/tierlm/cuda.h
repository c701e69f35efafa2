// TierLM JIT: CUDA launch helpers (include only from .cu / .cuh sources compiled by nvcc).
//
//   DeviceCheck(cudaError_t, parts...)   raise RuntimeError naming the CUDA error when it is not success
//   DeviceCheck()                        check the last launch (cudaGetLastError)
//   current_stream(DLDevice)             the stream PyTorch is using on that device for this call
//   LaunchKernel(grid, block, device, smem)(kernel, args...)
//                                        launch on the current stream of `device`, then check the launch
//   LaunchKernel(grid, block, stream, smem)(kernel, args...)   same with an explicit stream
//
// Stream: tvm-ffi records the caller framework's current stream for every CUDA tensor argument of a
// call (for PyTorch: torch.cuda.current_stream()) and exposes it through TVMFFIEnvGetStream. Kernels
// therefore order correctly with surrounding PyTorch work without any synchronisation.
//
// Build with -DTIERLM_JIT_SYNC_CHECK (load_jit(debug=True) or TIERLM_JIT_DEBUG=1) to synchronise after
// every launch, so that an asynchronous fault is reported by the launch that caused it.
#pragma once

#include <tierlm/utils.h>

#include <cuda_runtime.h>
#include <dlpack/dlpack.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/extra/cuda/device_guard.h>

#include <utility>

namespace tierlm {

template <typename... Parts>
inline void DeviceCheck(cudaError_t err, Parts&&... parts) {
  if (__builtin_expect(err != cudaSuccess, 0)) {
    FailRuntime("CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")",
                sizeof...(Parts) ? ": " : "", std::forward<Parts>(parts)...);
  }
}

/// Check (and clear) the error state left by the last kernel launch on this thread.
inline void DeviceCheck() { DeviceCheck(cudaGetLastError(), "after kernel launch"); }

inline cudaStream_t current_stream(DLDevice device) {
  return static_cast<cudaStream_t>(TVMFFIEnvGetStream(device.device_type, device.device_id));
}

/// Launch configuration bound to a stream; call it with the kernel and its arguments.
class LaunchKernel {
 public:
  LaunchKernel(dim3 grid, dim3 block, DLDevice device, size_t smem = 0)
      : grid_(grid), block_(block), smem_(smem), stream_(current_stream(device)), device_id_(device.device_id) {
    ValueCheck(device.device_type == kDLCUDA, "LaunchKernel: expected a CUDA device, got ",
               static_cast<int>(device.device_type));
  }
  LaunchKernel(dim3 grid, dim3 block, cudaStream_t stream, size_t smem = 0)
      : grid_(grid), block_(block), smem_(smem), stream_(stream) {}

  template <typename... KernelArgs, typename... Args>
  void operator()(void (*kernel)(KernelArgs...), Args&&... args) const {
    if (grid_.x == 0 || grid_.y == 0 || grid_.z == 0) return;  // nothing to do; CUDA rejects empty grids
    if (device_id_ >= 0) {
      tvm::ffi::CUDADeviceGuard guard(device_id_);  // the stream belongs to this device
      launch(kernel, std::forward<Args>(args)...);
    } else {
      launch(kernel, std::forward<Args>(args)...);
    }
  }

 private:
  template <typename... KernelArgs, typename... Args>
  void launch(void (*kernel)(KernelArgs...), Args&&... args) const {
    kernel<<<grid_, block_, smem_, stream_>>>(std::forward<Args>(args)...);
    DeviceCheck(cudaGetLastError(), "launching kernel with grid (", grid_.x, ", ", grid_.y, ", ", grid_.z,
                ") block (", block_.x, ", ", block_.y, ", ", block_.z, ") smem ", smem_);
#ifdef TIERLM_JIT_SYNC_CHECK
    DeviceCheck(cudaStreamSynchronize(stream_), "while running the kernel (TIERLM_JIT_SYNC_CHECK)");
#endif
  }

  dim3 grid_, block_;
  size_t smem_;
  cudaStream_t stream_;
  int device_id_ = -1;
};

}  // namespace tierlm
