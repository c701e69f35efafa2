// KV page transfer, CPU version (device pool in host memory): one memcpy per (page, region) chunk.
// Layout and arguments: kv_transfer_common.h.
#pragma once

#include "kv_transfer_common.h"

#include <cstring>

namespace tierlm_kernels {

template <bool kToHost>
void kv_transfer_cpu(tvm::ffi::TensorView regions, tvm::ffi::TensorView host, tvm::ffi::TensorView page_ids,
                     int64_t num_device_pages, int64_t region_begin, int64_t region_count) {
  using namespace tierlm;
  const KVTransferShape s = check_kv_transfer_args<kDLCPU>(regions, host, page_ids, num_device_pages);
  if (region_count < 0) region_count = s.num_regions - region_begin;
  ValueCheck(region_begin >= 0 && region_count >= 0 && region_begin + region_count <= s.num_regions, "regions [",
             region_begin, ", ", region_begin + region_count, ") out of range [0, ", s.num_regions, ")");
  const int64_t* table = data_ptr<const int64_t>(regions);
  const int64_t R = s.num_regions;
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
  for (int64_t i : irange(s.num_pages)) {
    for (int64_t r : irange(region_begin, region_begin + region_count)) {
      const int64_t chunk = table[R + r];
      char* dev = reinterpret_cast<char*>(table[r]) + dev_ids[i] * chunk;
      char* hst = host_base + host_ids[i] * s.page_bytes + table[2 * R + r];
      if (kToHost) {
        std::memcpy(hst, dev, static_cast<size_t>(chunk));
      } else {
        std::memcpy(dev, hst, static_cast<size_t>(chunk));
      }
    }
  }
}

inline void kv_device_to_host_cpu(tvm::ffi::TensorView regions, tvm::ffi::TensorView host,
                                  tvm::ffi::TensorView page_ids, int64_t num_device_pages, int64_t region_begin,
                                  int64_t region_count) {
  kv_transfer_cpu<true>(regions, host, page_ids, num_device_pages, region_begin, region_count);
}

inline void kv_host_to_device_cpu(tvm::ffi::TensorView regions, tvm::ffi::TensorView host,
                                  tvm::ffi::TensorView page_ids, int64_t num_device_pages, int64_t region_begin,
                                  int64_t region_count) {
  kv_transfer_cpu<false>(regions, host, page_ids, num_device_pages, region_begin, region_count);
}

}  // namespace tierlm_kernels
