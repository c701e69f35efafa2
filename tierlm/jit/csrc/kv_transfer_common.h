// KV page transfer: argument checks and layout arithmetic shared by the CPU and CUDA versions.
//
// The kernels move opaque bytes; they know nothing of K, V, heads or latents. The device pool is a list
// of "regions" (one per layer and KV buffer, in page-first order); region r is an array of pages of
// chunk_bytes[r] bytes each, page p at byte p * chunk_bytes[r] from the region's base pointer. The host
// pool is page-first: [num_host_pages, page_bytes] bytes, and region r's chunk of host page h starts at
// byte h * page_bytes + host_offset[r]. One page is one contiguous region of the host pool.
//
// Arguments of both entry points:
//   regions     int64 [3, R] on the CPU: row 0 base pointers, row 1 chunk_bytes, row 2 host_offset, for
//               every region of the pool (the Python side guarantees the pointers are live tensors)
//   host        uint8 [num_host_pages, page_bytes] (pinned CPU memory, or a CUDA staging buffer)
//   page_ids    int64 [2, n]: row 0 device page ids, row 1 host page ids (CPU for the CPU kernel, on the
//               pool's device for the CUDA kernel)
//   num_device_pages  pages of every region (range checks)
#pragma once

#include <tierlm/tensor.h>
#include <tierlm/utils.h>

#include <tvm/ffi/container/tensor.h>

#include <cstdint>

namespace tierlm_kernels {

struct KVTransferShape {
  int64_t num_regions = 0;
  int64_t num_device_pages = 0;
  int64_t num_host_pages = 0;
  int64_t page_bytes = 0;
  int64_t num_pages = 0;  // pages to copy (n)
  DLDevice device{};       // page_ids' device (where the copy runs)
  DLDevice host_device{};  // host's device (kDLCUDA for a device staging buffer)
};

/// Check all arguments; page_ids must live on a device of type kPoolDevice.
template <DLDeviceType kPoolDevice>
KVTransferShape check_kv_transfer_args(const tvm::ffi::TensorView& regions, const tvm::ffi::TensorView& host,
                                       const tvm::ffi::TensorView& page_ids, int64_t num_device_pages) {
  using namespace tierlm;
  SymbolicSize r{"regions"}, host_pages{"num_host_pages"}, page_bytes{"page_bytes"}, n{"num_pages"};
  SymbolicDevice pool_device, host_device;
  TensorMatcher({3, r}).with_dtype<int64_t>().with_device<kDLCPU>().verify(regions, "regions");
  // The CUDA version also accepts a device "host" buffer of the same layout: a staging area for
  // copy-engine transfers (gather into it, then one DMA per contiguous run).
  auto host_matcher = TensorMatcher({host_pages, page_bytes}).with_dtype<uint8_t>();
  if constexpr (kPoolDevice == kDLCUDA) {
    std::move(host_matcher).with_device<kDLCPU, kDLCUDAHost, kDLCUDA>(host_device).verify(host, "host_buf");
  } else {
    std::move(host_matcher).with_device<kDLCPU, kDLCUDAHost>(host_device).verify(host, "host_buf");
  }
  TensorMatcher({2, n}).with_dtype<int64_t>().with_device<kPoolDevice>(pool_device).verify(page_ids, "page_ids");
  ValueCheck(num_device_pages > 0, "num_device_pages must be > 0, got ", num_device_pages);
  const int64_t* t = data_ptr<const int64_t>(regions);
  const int64_t R = r.unwrap();
  for (int64_t i : irange(R)) {  // every chunk must fit inside a host page
    ValueCheck(t[i] != 0 && t[R + i] > 0 && t[2 * R + i] >= 0 && t[2 * R + i] + t[R + i] <= page_bytes.unwrap(),
               "region ", i, " (chunk ", t[R + i], " bytes at host offset ", t[2 * R + i],
               ") does not fit a host page of ", page_bytes.unwrap(), " bytes");
  }
  KVTransferShape s;
  s.num_regions = R;
  s.num_device_pages = num_device_pages;
  s.num_host_pages = host_pages.unwrap();
  s.page_bytes = page_bytes.unwrap();
  s.num_pages = n.unwrap();
  s.device = pool_device.unwrap();
  s.host_device = host_device.unwrap();
  return s;
}

}  // namespace tierlm_kernels
