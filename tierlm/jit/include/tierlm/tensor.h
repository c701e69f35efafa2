// TierLM JIT: declarative tensor checks for kernel entry points.
//
//   SymbolicSize N{"num_pages"};  SymbolicDType dt;  SymbolicDevice dev;
//   TensorMatcher({N, -1, 8})            // shape: symbol, wildcard, literal
//       .with_strides({-1, 8, 1})        // optional; omitted = must be contiguous
//       .with_dtype<bf16_t, float>(dt)   // allowed dtypes (none listed = any); symbol must agree
//       .with_device<kDLCUDA>(dev)       // allowed device types; symbol must agree (type and id)
//       .verify(k, "k")                  // the name appears in every error message
//       .verify(v, "v");
//   int64_t n = N.unwrap();
//
// A symbol binds on first sight and every later sighting must agree. Failures raise a Python
// ValueError naming the argument, the dimension, the expected value (and where it came from) and
// the actual value. A TensorMatcher is a temporary: its methods only exist on rvalues.
#pragma once

#include <tierlm/utils.h>

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/tensor.h>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace tierlm {

// 16-bit float types: CUDA's own types under nvcc, opaque 2-byte stand-ins in host-only code.
#if defined(__CUDACC__)
using bf16_t = __nv_bfloat16;
using fp16_t = __half;
#else
struct bf16_t {
  uint16_t bits;
};
struct fp16_t {
  uint16_t bits;
};
#endif
struct fp8_e4m3_t {
  uint8_t bits;
};

template <typename T>
struct DTypeOf;
#define TIERLM_DEFINE_DTYPE(T, CODE, BITS) \
  template <>                              \
  struct DTypeOf<T> {                      \
    static constexpr DLDataType value{static_cast<uint8_t>(CODE), BITS, 1}; \
  }
TIERLM_DEFINE_DTYPE(float, kDLFloat, 32);
TIERLM_DEFINE_DTYPE(double, kDLFloat, 64);
TIERLM_DEFINE_DTYPE(int8_t, kDLInt, 8);
TIERLM_DEFINE_DTYPE(int16_t, kDLInt, 16);
TIERLM_DEFINE_DTYPE(int32_t, kDLInt, 32);
TIERLM_DEFINE_DTYPE(int64_t, kDLInt, 64);
TIERLM_DEFINE_DTYPE(uint8_t, kDLUInt, 8);
TIERLM_DEFINE_DTYPE(bool, kDLBool, 8);
TIERLM_DEFINE_DTYPE(bf16_t, kDLBfloat, 16);
TIERLM_DEFINE_DTYPE(fp16_t, kDLFloat, 16);
TIERLM_DEFINE_DTYPE(fp8_e4m3_t, kDLFloat8_e4m3fn, 8);
#undef TIERLM_DEFINE_DTYPE

inline bool same_dtype(DLDataType a, DLDataType b) {
  return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes;
}
inline std::string dtype_name(DLDataType d) { return std::string(tvm::ffi::DLDataTypeToString(d)); }
inline std::string device_type_name(int type) {
  switch (type) {
    case kDLCPU: return "cpu";
    case kDLCUDA: return "cuda";
    case kDLCUDAHost: return "cuda_host";
    case kDLCUDAManaged: return "cuda_managed";
    case kDLROCM: return "rocm";
    default: return "device_type_" + std::to_string(type);
  }
}
inline std::string device_name(DLDevice d) { return device_type_name(d.device_type) + ":" + std::to_string(d.device_id); }

/// A named size that binds to the first value it is matched against; later matches must agree.
class SymbolicSize {
 public:
  explicit SymbolicSize(const char* name) : name_(name) {}
  SymbolicSize(const char* name, int64_t value) : name_(name), value_(value), bound_(true), origin_("preset") {}
  SymbolicSize(const SymbolicSize&) = delete;  // a copy would bind separately from the original
  SymbolicSize& operator=(const SymbolicSize&) = delete;

  bool bound() const { return bound_; }
  const char* name() const { return name_; }
  const std::string& origin() const { return origin_; }
  int64_t unwrap() const {
    RuntimeCheck(bound_, "symbolic size '", name_, "' was never matched against a tensor");
    return value_;
  }
  void bind(int64_t value, std::string origin) {
    value_ = value;
    bound_ = true;
    origin_ = std::move(origin);
  }

 private:
  const char* name_;
  int64_t value_ = -1;
  bool bound_ = false;
  std::string origin_;
};

/// A dtype every tensor matched with it must share.
class SymbolicDType {
 public:
  SymbolicDType() = default;
  SymbolicDType(const SymbolicDType&) = delete;
  SymbolicDType& operator=(const SymbolicDType&) = delete;
  bool bound() const { return bound_; }
  const std::string& origin() const { return origin_; }
  DLDataType unwrap() const {
    RuntimeCheck(bound_, "symbolic dtype was never matched against a tensor");
    return value_;
  }
  void bind(DLDataType v, std::string origin) { value_ = v, bound_ = true, origin_ = std::move(origin); }

 private:
  DLDataType value_{};
  bool bound_ = false;
  std::string origin_;
};

/// A device (type and id) every tensor matched with it must share.
class SymbolicDevice {
 public:
  SymbolicDevice() = default;
  SymbolicDevice(const SymbolicDevice&) = delete;
  SymbolicDevice& operator=(const SymbolicDevice&) = delete;
  bool bound() const { return bound_; }
  const std::string& origin() const { return origin_; }
  DLDevice unwrap() const {
    RuntimeCheck(bound_, "symbolic device was never matched against a tensor");
    return value_;
  }
  void bind(DLDevice v, std::string origin) { value_ = v, bound_ = true, origin_ = std::move(origin); }

 private:
  DLDevice value_{};
  bool bound_ = false;
  std::string origin_;
};

/// One expected size or stride: a literal (-1 = anything) or a symbol.
class Dim {
 public:
  Dim(int value) : literal_(value) {}          // NOLINT: implicit on purpose, for {N, -1, 8}
  Dim(int64_t value) : literal_(value) {}      // NOLINT
  Dim(SymbolicSize& sym) : sym_(&sym) {}       // NOLINT

  /// Empty string on success, else the "expected ..." half of the message.
  std::string match(int64_t actual, const std::string& where) const {
    if (sym_ == nullptr) {
      if (literal_ < 0 || literal_ == actual) return {};
      return std::to_string(literal_);
    }
    if (!sym_->bound()) {
      sym_->bind(actual, where);
      return {};
    }
    if (sym_->unwrap() == actual) return {};
    return std::to_string(sym_->unwrap()) + " (" + sym_->name() + ", from " + sym_->origin() + ")";
  }

 private:
  int64_t literal_ = -1;
  SymbolicSize* sym_ = nullptr;
};

/// Checks shape, strides, dtype and device of one or more tensors; see the file comment.
class TensorMatcher {
 public:
  TensorMatcher(std::initializer_list<Dim> shape) : shape_(shape) {}
  TensorMatcher(const TensorMatcher&) = delete;
  TensorMatcher(TensorMatcher&&) = default;

  TensorMatcher&& with_strides(std::initializer_list<Dim> strides) && {
    strides_.assign(strides.begin(), strides.end());
    has_strides_ = true;
    return std::move(*this);
  }
  template <typename... Ts>
  TensorMatcher&& with_dtype() && {
    dtypes_ = {DTypeOf<Ts>::value...};
    return std::move(*this);
  }
  template <typename... Ts>
  TensorMatcher&& with_dtype(SymbolicDType& sym) && {
    dtypes_ = {DTypeOf<Ts>::value...};
    dtype_sym_ = &sym;
    return std::move(*this);
  }
  template <DLDeviceType... Ds>
  TensorMatcher&& with_device() && {
    devices_ = {static_cast<int>(Ds)...};
    return std::move(*this);
  }
  template <DLDeviceType... Ds>
  TensorMatcher&& with_device(SymbolicDevice& sym) && {
    devices_ = {static_cast<int>(Ds)...};
    device_sym_ = &sym;
    return std::move(*this);
  }

  TensorMatcher&& verify(const tvm::ffi::TensorView& t, const char* arg) && {
    check_shape(t, arg);
    check_strides(t, arg);
    check_dtype(t, arg);
    check_device(t, arg);
    return std::move(*this);
  }

 private:
  static std::string shape_str(tvm::ffi::ShapeView s) {
    std::ostringstream os;
    os << "[";
    for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
    os << "]";
    return os.str();
  }
  void check_shape(const tvm::ffi::TensorView& t, const char* arg) const {
    ValueCheck(t.ndim() == static_cast<int32_t>(shape_.size()), arg, ": expected ", shape_.size(),
               " dimensions, got ", t.ndim(), " (shape ", shape_str(t.shape()), ")");
    for (size_t i = 0; i < shape_.size(); ++i) {
      const int64_t actual = t.size(static_cast<int64_t>(i));
      std::string where = std::string(arg) + " dimension " + std::to_string(i);
      std::string expected = shape_[i].match(actual, where);
      ValueCheck(expected.empty(), arg, ": dimension ", i, " expected size ", expected, ", got ", actual,
                 " (shape ", shape_str(t.shape()), ")");
    }
  }
  void check_strides(const tvm::ffi::TensorView& t, const char* arg) const {
    if (has_strides_) {
      ValueCheck(strides_.size() == shape_.size(), "TensorMatcher for ", arg, ": strides and shape differ in rank");
      for (size_t i = 0; i < strides_.size(); ++i) {
        const int64_t actual = t.stride(static_cast<int64_t>(i));
        std::string expected = strides_[i].match(actual, std::string(arg) + " stride " + std::to_string(i));
        ValueCheck(expected.empty(), arg, ": stride of dimension ", i, " expected ", expected, ", got ", actual,
                   " (strides ", shape_str(t.strides()), ")");
      }
      return;
    }
    // Default: row-major contiguous. Dimensions of size 1 may carry any stride (as in PyTorch).
    int64_t expected = 1;
    for (int64_t i = t.ndim() - 1; i >= 0; --i) {
      const int64_t size = t.size(i);
      ValueCheck(size == 1 || t.stride(i) == expected, arg, ": must be contiguous; stride of dimension ", i,
                 " expected ", expected, ", got ", t.stride(i), " (strides ", shape_str(t.strides()), ")");
      expected *= size;
    }
  }
  void check_dtype(const tvm::ffi::TensorView& t, const char* arg) const {
    const DLDataType d = t.dtype();
    if (!dtypes_.empty()) {
      bool ok = false;
      std::string allowed;
      for (const DLDataType& a : dtypes_) {
        ok = ok || same_dtype(a, d);
        allowed += (allowed.empty() ? "" : ", ") + dtype_name(a);
      }
      ValueCheck(ok, arg, ": dtype expected one of [", allowed, "], got ", dtype_name(d));
    }
    if (dtype_sym_ != nullptr) {
      if (!dtype_sym_->bound()) {
        dtype_sym_->bind(d, arg);
      } else {
        ValueCheck(same_dtype(dtype_sym_->unwrap(), d), arg, ": dtype expected ", dtype_name(dtype_sym_->unwrap()),
                   " (same as ", dtype_sym_->origin(), "), got ", dtype_name(d));
      }
    }
  }
  void check_device(const tvm::ffi::TensorView& t, const char* arg) const {
    const DLDevice d = t.device();
    if (!devices_.empty()) {
      bool ok = false;
      std::string allowed;
      for (int a : devices_) {
        ok = ok || a == static_cast<int>(d.device_type);
        allowed += (allowed.empty() ? "" : ", ") + device_type_name(a);
      }
      ValueCheck(ok, arg, ": device expected one of [", allowed, "], got ", device_name(d));
    }
    if (device_sym_ != nullptr) {
      if (!device_sym_->bound()) {
        device_sym_->bind(d, arg);
      } else {
        const DLDevice e = device_sym_->unwrap();
        ValueCheck(e.device_type == d.device_type && e.device_id == d.device_id, arg, ": device expected ",
                   device_name(e), " (same as ", device_sym_->origin(), "), got ", device_name(d));
      }
    }
  }

  std::vector<Dim> shape_;
  std::vector<Dim> strides_;
  bool has_strides_ = false;
  std::vector<DLDataType> dtypes_;
  std::vector<int> devices_;
  SymbolicDType* dtype_sym_ = nullptr;
  SymbolicDevice* device_sym_ = nullptr;
};

}  // namespace tierlm
