// KV pages between the device and the page-first pinned host pool by DMA (no SM time): one layer of pages
// from the host pool into a device staging buffer (kv_layer_h2d_dma), and runs of pages from the device
// pool straight into the host pool (kv_pages_d2h_dma, below).
//
// Host pool: uint8 [num_host_pages, page_bytes]; one layer of one page is `layer_bytes` contiguous bytes at
// `layer_offset` within the page (kv_transfer_common.h), and consecutive host pages are `page_bytes`
// apart. A run of consecutive host pages is therefore one strided 2-D copy (cudaMemcpy2DAsync: rows of
// layer_bytes, source pitch one page): the copy engine moves it, no SM is used. Staging: uint8
// [staging_pages, layer_bytes] on the device, filled in run order. Runs on the current stream.
//
//   staging       the device buffer
//   host          the pinned host pool
//   runs          int64 [m, 3] on the CPU: (first staging page, first host page, pages) per run
//   layer_offset  byte offset of the layer within a host page
#pragma once

#include <tierlm/cuda.h>
#include <tierlm/tensor.h>
#include <tierlm/utils.h>

#include <tvm/ffi/container/tensor.h>

#include <cstdint>

namespace tierlm_kernels {

inline void kv_layer_h2d_dma(tvm::ffi::TensorView staging, tvm::ffi::TensorView host, tvm::ffi::TensorView runs,
                             int64_t layer_offset) {
  using namespace tierlm;
  SymbolicSize staging_pages{"staging_pages"}, layer_bytes{"layer_bytes"};
  SymbolicSize host_pages{"num_host_pages"}, page_bytes{"page_bytes"}, m{"runs"};
  SymbolicDevice dev;
  TensorMatcher({staging_pages, layer_bytes}).with_dtype<uint8_t>().with_device<kDLCUDA>(dev).verify(staging,
                                                                                                    "staging");
  TensorMatcher({host_pages, page_bytes}).with_dtype<uint8_t>().with_device<kDLCPU, kDLCUDAHost>().verify(host,
                                                                                                         "host_buf");
  TensorMatcher({m, 3}).with_dtype<int64_t>().with_device<kDLCPU>().verify(runs, "runs");
  ValueCheck(layer_offset >= 0 && layer_offset + layer_bytes.unwrap() <= page_bytes.unwrap(), "layer at byte ",
             layer_offset, " (", layer_bytes.unwrap(), " bytes) does not fit a host page of ", page_bytes.unwrap());
  cudaPointerAttributes attr{};
  DeviceCheck(cudaPointerGetAttributes(&attr, data_ptr<void>(host)), "querying host_buf");
  ValueCheck(attr.type == cudaMemoryTypeHost, "host_buf must be pinned host memory for asynchronous DMA");
  const size_t row = static_cast<size_t>(layer_bytes.unwrap());
  const size_t pitch = static_cast<size_t>(page_bytes.unwrap());
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
  const char* src = data_ptr<const char>(host) + static_cast<size_t>(layer_offset);
  for (int64_t i : irange(m.unwrap())) {
    const int64_t s = r[3 * i], h = r[3 * i + 1], n = r[3 * i + 2];
    DeviceCheck(cudaMemcpy2DAsync(dst + static_cast<size_t>(s) * row, row, src + static_cast<size_t>(h) * pitch,
                                  pitch, row, static_cast<size_t>(n), cudaMemcpyHostToDevice, stream),
                "queueing a layer DMA");
  }
}

// Pages of the device pool to the page-first pinned host pool by DMA, for runs of pages that are consecutive
// on both sides: per run and region one strided 2-D copy (rows of the region's bytes per page, source pitch
// the same, destination pitch one host page). The copy engine moves it, no SM is used, so a backup running
// beside a prefill takes nothing from its compute. Runs on the current stream.
//
//   region0  the first region, uint8 [num_device_pages, chunk_bytes] on the GPU (its device and page count)
//   table    int64 [3, R] on the CPU: each region's base address, bytes per page and byte offset within a
//            host page (the region table of kv_transfer_common.h); every region has num_device_pages pages
//   host     the pinned host pool, uint8 [num_host_pages, page_bytes]
//   runs     int64 [m, 3] on the CPU: (first device page, first host page, pages) per run
inline void kv_pages_d2h_dma(tvm::ffi::TensorView region0, tvm::ffi::TensorView table, tvm::ffi::TensorView host,
                             tvm::ffi::TensorView runs) {
  using namespace tierlm;
  SymbolicSize device_pages{"num_device_pages"}, chunk_bytes{"chunk_bytes"}, regions{"regions"};
  SymbolicSize host_pages{"num_host_pages"}, page_bytes{"page_bytes"}, m{"runs"};
  SymbolicDevice dev;
  TensorMatcher({device_pages, chunk_bytes}).with_dtype<uint8_t>().with_device<kDLCUDA>(dev).verify(region0,
                                                                                                 "regions[0]");
  TensorMatcher({3, regions}).with_dtype<int64_t>().with_device<kDLCPU>().verify(table, "table");
  TensorMatcher({host_pages, page_bytes}).with_dtype<uint8_t>().with_device<kDLCPU, kDLCUDAHost>().verify(host,
                                                                                                         "host_buf");
  TensorMatcher({m, 3}).with_dtype<int64_t>().with_device<kDLCPU>().verify(runs, "runs");
  cudaPointerAttributes attr{};
  DeviceCheck(cudaPointerGetAttributes(&attr, data_ptr<void>(host)), "querying host_buf");
  ValueCheck(attr.type == cudaMemoryTypeHost, "host_buf must be pinned host memory for asynchronous DMA");
  const int64_t R = regions.unwrap();
  const int64_t* t = data_ptr<const int64_t>(table);
  ValueCheck(R > 0 && t[0] == reinterpret_cast<int64_t>(data_ptr<void>(region0)), "table does not start at regions[0]");
  for (int64_t r : irange(R)) {  // check everything before queueing anything
    ValueCheck(t[R + r] > 0 && t[2 * R + r] >= 0 && t[2 * R + r] + t[R + r] <= page_bytes.unwrap(), "region ", r,
               " (", t[R + r], " bytes at ", t[2 * R + r], ") does not fit a host page of ", page_bytes.unwrap());
  }
  const int64_t* u = data_ptr<const int64_t>(runs);
  for (int64_t i : irange(m.unwrap())) {
    const int64_t d = u[3 * i], h = u[3 * i + 1], n = u[3 * i + 2];
    ValueCheck(n > 0 && d >= 0 && d + n <= device_pages.unwrap() && h >= 0 && h + n <= host_pages.unwrap(), "run ",
               i, " (device ", d, ", host ", h, ", pages ", n, ") is out of range");
  }
  const DLDevice device = dev.unwrap();
  tvm::ffi::CUDADeviceGuard guard(device.device_id);
  cudaStream_t stream = current_stream(device);
  char* dst = data_ptr<char>(host);
  const size_t pitch = static_cast<size_t>(page_bytes.unwrap());
  for (int64_t i : irange(m.unwrap())) {
    const int64_t d = u[3 * i], h = u[3 * i + 1], n = u[3 * i + 2];
    for (int64_t r : irange(R)) {
      const size_t row = static_cast<size_t>(t[R + r]);
      const char* src = reinterpret_cast<const char*>(t[r]) + static_cast<size_t>(d) * row;
      DeviceCheck(cudaMemcpy2DAsync(dst + static_cast<size_t>(h) * pitch + static_cast<size_t>(t[2 * R + r]), pitch,
                                    src, row, row, static_cast<size_t>(n), cudaMemcpyDeviceToHost, stream),
                  "queueing a page DMA");
    }
  }
}

}  // namespace tierlm_kernels
