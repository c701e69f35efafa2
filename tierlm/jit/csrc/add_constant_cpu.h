// Example kernel (CPU): dst = src + kConstant, the constant baked in as a template argument.
// Python side: tierlm/jit/add_constant.py. Walk-through: docs/jit_kernels.md.
#pragma once

#include <tierlm/tensor.h>
#include <tierlm/utils.h>

#include <tvm/ffi/container/tensor.h>

#include <cstdint>

namespace tierlm_kernels {

template <int32_t kConstant, typename T>
void add_constant_loop(T* dst, const T* src, int64_t n) {
  for (int64_t i : tierlm::irange(n)) dst[i] = src[i] + static_cast<T>(kConstant);
}

template <int32_t kConstant>
void add_constant_cpu(tvm::ffi::TensorView dst, tvm::ffi::TensorView src) {
  using namespace tierlm;
  SymbolicSize n{"num_elements"};
  SymbolicDType dtype;
  SymbolicDevice device;
  TensorMatcher({n})  //
      .with_dtype<int32_t, int64_t, float>(dtype)
      .with_device<kDLCPU>(device)
      .verify(dst, "dst")
      .verify(src, "src");
  const DLDataType dt = dtype.unwrap();
  if (same_dtype(dt, DTypeOf<int32_t>::value)) {
    add_constant_loop<kConstant>(data_ptr<int32_t>(dst), data_ptr<const int32_t>(src), n.unwrap());
  } else if (same_dtype(dt, DTypeOf<int64_t>::value)) {
    add_constant_loop<kConstant>(data_ptr<int64_t>(dst), data_ptr<const int64_t>(src), n.unwrap());
  } else {
    add_constant_loop<kConstant>(data_ptr<float>(dst), data_ptr<const float>(src), n.unwrap());
  }
}

}  // namespace tierlm_kernels
