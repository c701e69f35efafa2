// TierLM JIT: host-side utilities shared by every kernel (no CUDA dependency).
//
//   irange(n), irange(begin, end)        integer ranges for range-for loops
//   div_ceil(a, b)                       rounded-up integer division
//   RuntimeCheck(cond, parts...)         throws a Python RuntimeError with the parts formatted
//   ValueCheck(cond, parts...)           same, as a Python ValueError (bad arguments)
//   Fail<Kind>(parts...)                 unconditional throw
//   data_ptr<T>(tensor_view)             typed data pointer, byte_offset applied
#pragma once

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>

namespace tierlm {

/// A half-open integer range [begin, end) usable in range-for; empty when end <= begin.
template <typename T>
class IntRange {
 public:
  class iterator {
   public:
    explicit iterator(T v) : v_(v) {}
    T operator*() const { return v_; }
    iterator& operator++() {
      ++v_;
      return *this;
    }
    bool operator!=(const iterator& other) const { return v_ != other.v_; }

   private:
    T v_;
  };
  IntRange(T begin, T end) : begin_(begin), end_(end < begin ? begin : end) {}
  iterator begin() const { return iterator(begin_); }
  iterator end() const { return iterator(end_); }
  T size() const { return end_ - begin_; }

 private:
  T begin_, end_;
};

template <typename T, typename = std::enable_if_t<std::is_integral<T>::value>>
inline IntRange<T> irange(T end) {
  return IntRange<T>(T(0), end);
}

template <typename T, typename U,
          typename = std::enable_if_t<std::is_integral<T>::value && std::is_integral<U>::value>>
inline IntRange<std::common_type_t<T, U>> irange(T begin, U end) {
  using C = std::common_type_t<T, U>;
  return IntRange<C>(static_cast<C>(begin), static_cast<C>(end));
}

template <typename T, typename U>
constexpr auto div_ceil(T a, U b) -> std::common_type_t<T, U> {
  return (a + b - 1) / b;
}

namespace detail {

template <typename... Parts>
std::string format_parts(Parts&&... parts) {
  std::ostringstream os;
  (void)std::initializer_list<int>{((os << std::forward<Parts>(parts)), 0)...};
  return os.str();
}

}  // namespace detail

/// Throw a Python RuntimeError whose message is the concatenation of `parts`.
template <typename... Parts>
[[noreturn]] inline void FailRuntime(Parts&&... parts) {
  TVM_FFI_THROW(RuntimeError) << detail::format_parts(std::forward<Parts>(parts)...);
  __builtin_unreachable();  // ErrorBuilder throws from its destructor
}

/// Throw a Python ValueError whose message is the concatenation of `parts`.
template <typename... Parts>
[[noreturn]] inline void FailValue(Parts&&... parts) {
  TVM_FFI_THROW(ValueError) << detail::format_parts(std::forward<Parts>(parts)...);
  __builtin_unreachable();
}

/// RuntimeCheck(cond, "x = ", x, " too large"): raises RuntimeError(message) in Python when !cond.
/// The parts are only formatted on failure.
template <typename... Parts>
inline void RuntimeCheck(bool cond, Parts&&... parts) {
  if (__builtin_expect(!cond, 0)) FailRuntime(std::forward<Parts>(parts)...);
}

/// Like RuntimeCheck but raises ValueError: use it for bad arguments from the caller.
template <typename... Parts>
inline void ValueCheck(bool cond, Parts&&... parts) {
  if (__builtin_expect(!cond, 0)) FailValue(std::forward<Parts>(parts)...);
}

/// The tensor's data pointer with DLPack's byte_offset applied, cast to T*.
template <typename T = void>
inline T* data_ptr(const tvm::ffi::TensorView& t) {
  return reinterpret_cast<T*>(static_cast<char*>(t.data_ptr()) + t.byte_offset());
}

/// Size in bytes of one element of `dtype` (sub-byte types are rejected).
inline int64_t dtype_bytes(DLDataType dtype) {
  const int64_t bits = static_cast<int64_t>(dtype.bits) * dtype.lanes;
  ValueCheck(bits % 8 == 0, "sub-byte dtypes are not supported (", bits, " bits)");
  return bits / 8;
}

}  // namespace tierlm
