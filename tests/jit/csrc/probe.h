// Test-only kernels for tests/jit: exercise TensorMatcher, RuntimeCheck and irange.
#pragma once

#include <tierlm/tensor.h>
#include <tierlm/utils.h>

#include <tvm/ffi/container/tensor.h>

#include <cstdint>

namespace jit_probe {

// x: [rows, D] float32 with strides [N, 1] (rows of a wider buffer allowed); returns N * 1000 + D.
inline int64_t strides(tvm::ffi::TensorView x) {
  using namespace tierlm;
  SymbolicSize d{"head_dim"}, n{"row_stride"};
  TensorMatcher({-1, d}).with_strides({n, 1}).with_dtype<float>().with_device<kDLCPU>().verify(x, "x");
  return n.unwrap() * 1000 + d.unwrap();
}

// a, b: [N, 4] of one common dtype (any), contiguous; returns N.
inline int64_t pair(tvm::ffi::TensorView a, tvm::ffi::TensorView b) {
  using namespace tierlm;
  SymbolicSize n{"rows"};
  SymbolicDType dtype;
  SymbolicDevice device;
  TensorMatcher({n, 4}).with_dtype(dtype).with_device<kDLCPU>(device).verify(a, "a").verify(b, "b");
  return n.unwrap();
}

inline int64_t check_small(int64_t v) {
  tierlm::RuntimeCheck(v < 10, "value ", v, " must be < 10");
  return v;
}

inline int64_t range_sum(int64_t begin, int64_t end) {
  int64_t total = 0;
  for (int64_t i : tierlm::irange(begin, end)) total += i;
  for (int i : tierlm::irange(3)) total += 0 * i;
  return total;
}

inline int64_t unbound() {
  tierlm::SymbolicSize never{"never_matched"};
  return never.unwrap();
}

}  // namespace jit_probe
