// Example kernel (CUDA): dst = src + kConstant on int32 tensors, on PyTorch's current stream.
// Python side: tierlm/jit/add_constant.py. Walk-through: docs/jit_kernels.md.
#pragma once

#include <tierlm/cuda.h>
#include <tierlm/tensor.h>
#include <tierlm/utils.h>

#include <tvm/ffi/container/tensor.h>

#include <cstdint>

namespace tierlm_kernels {

template <int32_t kConstant>
__global__ void add_constant_kernel(int32_t* __restrict__ dst, const int32_t* __restrict__ src, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = src[i] + kConstant;
}

template <int32_t kConstant>
void add_constant_cuda(tvm::ffi::TensorView dst, tvm::ffi::TensorView src) {
  using namespace tierlm;
  SymbolicSize n{"num_elements"};
  SymbolicDevice device;
  TensorMatcher({n})  //
      .with_dtype<int32_t>()
      .with_device<kDLCUDA>(device)
      .verify(dst, "dst")
      .verify(src, "src");
  constexpr int kThreads = 256;
  const int64_t blocks = div_ceil(n.unwrap(), int64_t{kThreads});
  RuntimeCheck(blocks < (int64_t{1} << 31), "add_constant: too many elements (", n.unwrap(), ")");
  LaunchKernel(static_cast<unsigned>(blocks), kThreads, device.unwrap())(
      add_constant_kernel<kConstant>, data_ptr<int32_t>(dst), data_ptr<const int32_t>(src), n.unwrap());
}

}  // namespace tierlm_kernels
