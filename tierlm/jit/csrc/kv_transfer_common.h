// KV page transfer: argument checks and layout arithmetic shared by the CPU and CUDA versions.
//
// Device pool (layer-first): for each layer l, K[l] and V[l] are [num_slots, kv_heads, head_dim]
// tensors; slot = page * page_size + offset, so one page of one layer's K (or V) is one contiguous
// chunk of page_size * kv_heads * head_dim elements starting at element page * chunk.
// Host pool (page-first): [num_host_pages, layers, 2, page_size, kv_heads, head_dim]; chunk (p, l, kv)
// starts at element ((p * layers + l) * 2 + kv) * chunk. One page is one contiguous region.
//
// Arguments of both entry points:
//   layer_ptrs  int64 [2, layers] on the CPU: data pointers of K[l] (row 0) and V[l] (row 1); every
//               layer tensor has the shape/dtype/device of `k_ref` (the Python side checks this)
//   k_ref       K[0], used to check shape, dtype and device
//   host        the host pool
//   page_ids    int64 [2, n]: row 0 device page ids, row 1 host page ids (CPU for the CPU kernel,
//               on k_ref's device for the CUDA kernel)
#pragma once

#include <tierlm/tensor.h>
#include <tierlm/utils.h>

#include <tvm/ffi/container/tensor.h>

#include <cstdint>

namespace tierlm_kernels {

struct KVTransferShape {
  int64_t num_layers = 0;
  int64_t num_device_pages = 0;
  int64_t num_host_pages = 0;
  int64_t num_pages = 0;    // pages to copy (n)
  int64_t chunk_bytes = 0;  // bytes of one (page, layer, K-or-V) chunk
  DLDevice device{};        // k_ref's device
  DLDevice host_device{};   // host's device (kDLCUDA for a device staging buffer)
};

/// Check all arguments; k_ref and page_ids must live on a device of type kPoolDevice (the same one).
template <DLDeviceType kPoolDevice>
KVTransferShape check_kv_transfer_args(const tvm::ffi::TensorView& layer_ptrs, const tvm::ffi::TensorView& k_ref,
                                       const tvm::ffi::TensorView& host, const tvm::ffi::TensorView& page_ids) {
  using namespace tierlm;
  SymbolicSize layers{"layers"}, slots{"num_slots"}, heads{"kv_heads"}, head_dim{"head_dim"};
  SymbolicSize host_pages{"num_host_pages"}, page_size{"page_size"}, n{"num_pages"};
  SymbolicDType dtype;
  SymbolicDevice pool_device, host_device;
  TensorMatcher({2, layers}).with_dtype<int64_t>().with_device<kDLCPU>().verify(layer_ptrs, "layer_ptrs");
  TensorMatcher({slots, heads, head_dim})  //
      .with_dtype(dtype)
      .with_device<kPoolDevice>(pool_device)
      .verify(k_ref, "k_layers[0]");
  // The CUDA version also accepts a device "host" buffer of the same layout: a staging area for
  // copy-engine transfers (gather into it, then one DMA per contiguous run).
  auto host_matcher = TensorMatcher({host_pages, layers, 2, page_size, heads, head_dim}).with_dtype(dtype);
  if constexpr (kPoolDevice == kDLCUDA) {
    std::move(host_matcher).with_device<kDLCPU, kDLCUDAHost, kDLCUDA>(host_device).verify(host, "host_buf");
  } else {
    std::move(host_matcher).with_device<kDLCPU, kDLCUDAHost>(host_device).verify(host, "host_buf");
  }
  TensorMatcher({2, n}).with_dtype<int64_t>().with_device<kPoolDevice>(pool_device).verify(page_ids, "page_ids");
  ValueCheck(slots.unwrap() % page_size.unwrap() == 0, "k_layers[0]: num_slots ", slots.unwrap(),
             " is not a multiple of the host pool's page_size ", page_size.unwrap());
  KVTransferShape s;
  s.num_layers = layers.unwrap();
  s.num_device_pages = slots.unwrap() / page_size.unwrap();
  s.num_host_pages = host_pages.unwrap();
  s.num_pages = n.unwrap();
  s.chunk_bytes = page_size.unwrap() * heads.unwrap() * head_dim.unwrap() * dtype_bytes(dtype.unwrap());
  s.device = pool_device.unwrap();
  s.host_device = host_device.unwrap();
  return s;
}

}  // namespace tierlm_kernels
