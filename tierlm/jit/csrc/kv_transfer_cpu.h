// KV page transfer, CPU version (device pool in host memory): one memcpy per (page, layer, K/V) chunk.
// Layout and arguments: kv_transfer_common.h.
#pragma once

#include "kv_transfer_common.h"

#include <cstring>

namespace tierlm_kernels {

template <bool kToHost>
void kv_transfer_cpu(tvm::ffi::TensorView layer_ptrs, tvm::ffi::TensorView k_ref, tvm::ffi::TensorView host,
                     tvm::ffi::TensorView page_ids) {
  using namespace tierlm;
  const KVTransferShape s = check_kv_transfer_args<kDLCPU>(layer_ptrs, k_ref, host, page_ids);
  const int64_t* ptrs = data_ptr<const int64_t>(layer_ptrs);
  const int64_t* dev_ids = data_ptr<const int64_t>(page_ids);
  const int64_t* host_ids = dev_ids + s.num_pages;
  char* host_base = data_ptr<char>(host);
  // Check every id before copying anything: a bad id must not leave a half-done batch.
  for (int64_t i : irange(s.num_pages)) {
    ValueCheck(dev_ids[i] >= 0 && dev_ids[i] < s.num_device_pages, "device_pages[", i, "] = ", dev_ids[i],
               " is out of range [0, ", s.num_device_pages, ")");
    ValueCheck(host_ids[i] >= 0 && host_ids[i] < s.num_host_pages, "host_pages[", i, "] = ", host_ids[i],
               " is out of range [0, ", s.num_host_pages, ")");
  }
  const size_t chunk = static_cast<size_t>(s.chunk_bytes);
  for (int64_t i : irange(s.num_pages)) {
    for (int64_t l : irange(s.num_layers)) {
      for (int64_t kv : irange(2)) {
        char* dev = reinterpret_cast<char*>(ptrs[kv * s.num_layers + l]) + dev_ids[i] * s.chunk_bytes;
        char* hst = host_base + ((host_ids[i] * s.num_layers + l) * 2 + kv) * s.chunk_bytes;
        if (kToHost) {
          std::memcpy(hst, dev, chunk);
        } else {
          std::memcpy(dev, hst, chunk);
        }
      }
    }
  }
}

inline void kv_device_to_host_cpu(tvm::ffi::TensorView layer_ptrs, tvm::ffi::TensorView k_ref,
                                  tvm::ffi::TensorView host, tvm::ffi::TensorView page_ids) {
  kv_transfer_cpu<true>(layer_ptrs, k_ref, host, page_ids);
}

inline void kv_host_to_device_cpu(tvm::ffi::TensorView layer_ptrs, tvm::ffi::TensorView k_ref,
                                  tvm::ffi::TensorView host, tvm::ffi::TensorView page_ids) {
  kv_transfer_cpu<false>(layer_ptrs, k_ref, host, page_ids);
}

}  // namespace tierlm_kernels
