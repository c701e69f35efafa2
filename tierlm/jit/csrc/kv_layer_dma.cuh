// One layer of KV pages from the page-first pinned host pool into a device staging buffer, by DMA.
//
// Host pool: [num_host_pages, layers, 2, page_size, kv_heads, head_dim]; one layer of one page (its K
// then its V) is `layer_bytes` contiguous bytes, and consecutive host pages are `layers * layer_bytes`
// apart. A run of consecutive host pages is therefore one strided 2-D copy (cudaMemcpy2DAsync: rows of
// layer_bytes, source pitch one page): the copy engine moves it, no SM is used. Staging:
// [staging_pages, 2, page_size, kv_heads, head_dim], filled in run order. Runs on the current stream.
//
//   staging  the device buffer (dtype and per-token shape of the host pool)
//   host     the pinned host pool
//   runs     int64 [m, 3] on the CPU: (first staging page, first host page, pages) per run
//   layer    the layer to copy
#pragma once

#include <tierlm/cuda.h>
#include <tierlm/tensor.h>
#include <tierlm/utils.h>

#include <tvm/ffi/container/tensor.h>

#include <cstdint>

namespace tierlm_kernels {

inline void kv_layer_h2d_dma(tvm::ffi::TensorView staging, tvm::ffi::TensorView host, tvm::ffi::TensorView runs,
                             int64_t layer) {
  using namespace tierlm;
  SymbolicSize layers{"layers"}, page_size{"page_size"}, heads{"kv_heads"}, head_dim{"head_dim"};
  SymbolicSize staging_pages{"staging_pages"}, host_pages{"num_host_pages"}, m{"runs"};
  SymbolicDType dtype;
  SymbolicDevice dev;
  TensorMatcher({staging_pages, 2, page_size, heads, head_dim})
      .with_dtype(dtype)
      .with_device<kDLCUDA>(dev)
      .verify(staging, "staging");
  TensorMatcher({host_pages, layers, 2, page_size, heads, head_dim})
      .with_dtype(dtype)
      .with_device<kDLCPU, kDLCUDAHost>()
      .verify(host, "host_buf");
  TensorMatcher({m, 3}).with_dtype<int64_t>().with_device<kDLCPU>().verify(runs, "runs");
  ValueCheck(layer >= 0 && layer < layers.unwrap(), "layer ", layer, " out of range [0, ", layers.unwrap(), ")");
  cudaPointerAttributes attr{};
  DeviceCheck(cudaPointerGetAttributes(&attr, data_ptr<void>(host)), "querying host_buf");
  ValueCheck(attr.type == cudaMemoryTypeHost, "host_buf must be pinned host memory for asynchronous DMA");
  const size_t layer_bytes = static_cast<size_t>(2 * page_size.unwrap() * heads.unwrap() * head_dim.unwrap() *
                                                 dtype_bytes(dtype.unwrap()));
  const size_t page_bytes = layer_bytes * static_cast<size_t>(layers.unwrap());
  const int64_t* r = data_ptr<const int64_t>(runs);
  for (int64_t i : irange(m.unwrap())) {  // check everything before queueing anything
    const int64_t s = r[3 * i], h = r[3 * i + 1], n = r[3 * i + 2];
    ValueCheck(n > 0 && s >= 0 && s + n <= staging_pages.unwrap() && h >= 0 && h + n <= host_pages.unwrap(),
               "run ", i, " (staging ", s, ", host ", h, ", pages ", n, ") is out of range");
  }
  const DLDevice d = dev.unwrap();
  tvm::ffi::CUDADeviceGuard guard(d.device_id);
  cudaStream_t stream = current_stream(d);
  char* dst = data_ptr<char>(staging);
  const char* src = data_ptr<const char>(host) + static_cast<size_t>(layer) * layer_bytes;
  for (int64_t i : irange(m.unwrap())) {
    const int64_t s = r[3 * i], h = r[3 * i + 1], n = r[3 * i + 2];
    DeviceCheck(cudaMemcpy2DAsync(dst + static_cast<size_t>(s) * layer_bytes, layer_bytes,
                                  src + static_cast<size_t>(h) * page_bytes, page_bytes, layer_bytes,
                                  static_cast<size_t>(n), cudaMemcpyHostToDevice, stream),
                "queueing a layer DMA");
  }
}

}  // namespace tierlm_kernels
