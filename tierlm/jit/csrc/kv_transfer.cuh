// KV page transfer, CUDA version: device pool <-> pinned page-first host pool in ONE launch per batch.
// Layout and arguments: kv_transfer_common.h.
//
// The GPU reads/writes the pinned host buffer directly through unified virtual addressing (no staging
// copy, no DMA engine): each block copies 16-byte vectors of one (page, layer, K/V) chunk, every thread
// keeping kUnroll loads in flight, and the grid strides over all chunks of the batch so that thousands
// of PCIe requests are outstanding at once. Runs on PyTorch's current stream and does not synchronise:
// the caller orders any CPU access to the host pages after the stream (event / synchronize).
#pragma once

#include "kv_transfer_common.h"

#include <tierlm/cuda.h>

#include <algorithm>
#include <cstdint>

namespace tierlm_kernels {

constexpr int kKVMaxLayers = 128;  // layers per launch (kernel parameter space); more = more launches
constexpr int kKVThreads = 256;
// Tuning knobs (the benchmark sweeps them): vectors each thread loads before storing (template
// argument kUnroll), resident blocks per SM (runtime argument blocks_per_sm; 0 = 8) and a cap on
// the grid (max_blocks).
constexpr int kKVDefaultBlocksPerSM = 8;

// Which layers one call copies and how many blocks it may occupy. A small `max_blocks` leaves most SMs
// to the model's kernels while a transfer runs beside them (PCIe needs far fewer warps than SMs have).
struct KVLaunchLimits {
  int64_t blocks_per_sm = kKVDefaultBlocksPerSM;
  int64_t max_blocks = 0;  // 0 = no cap beyond blocks_per_sm x SMs
  int64_t layer_begin = 0;
  int64_t layer_count = 0;
};

struct KVLayerTable {
  char* ptr[2][kKVMaxLayers];  // [0] = K, [1] = V, for layers [layer_begin, layer_begin + layers_here)
};

template <typename Vec, int kUnroll, bool kToHost>
__global__ void __launch_bounds__(kKVThreads)
    kv_copy_kernel(const __grid_constant__ KVLayerTable table, int32_t layer_begin, int32_t layers_here,
                   int64_t total_layers, char* host, const int64_t* __restrict__ ids, int64_t n, int64_t chunk_vecs) {
  constexpr int64_t kUnitVecs = int64_t{kKVThreads} * kUnroll;
  const int64_t units_per_chunk = (chunk_vecs + kUnitVecs - 1) / kUnitVecs;
  const int64_t chunks_per_page = 2 * int64_t{layers_here};
  const int64_t total_units = n * chunks_per_page * units_per_chunk;
  // Consecutive units walk one page's chunks in host order, so in-flight writes to host are contiguous.
  for (int64_t u = blockIdx.x; u < total_units; u += gridDim.x) {
    const int64_t c = u / units_per_chunk;
    const int64_t seg = u - c * units_per_chunk;
    const int64_t i = c / chunks_per_page;
    const int32_t rem = static_cast<int32_t>(c - i * chunks_per_page);
    const int32_t l = rem >> 1, kv = rem & 1;
    const int64_t dev_page = ids[i], host_page = ids[n + i];
    Vec* dev = reinterpret_cast<Vec*>(table.ptr[kv][l]) + dev_page * chunk_vecs;
    Vec* hst = reinterpret_cast<Vec*>(host) + ((host_page * total_layers + layer_begin + l) * 2 + kv) * chunk_vecs;
    const Vec* __restrict__ src = kToHost ? dev : hst;
    Vec* __restrict__ dst = kToHost ? hst : dev;
    const int64_t base = seg * kUnitVecs + threadIdx.x;
    Vec buf[kUnroll];
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {  // all loads first: kUnroll requests in flight per thread
      const int64_t idx = base + int64_t{j} * kKVThreads;
      if (idx < chunk_vecs) buf[j] = src[idx];
    }
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {
      const int64_t idx = base + int64_t{j} * kKVThreads;
      if (idx < chunk_vecs) dst[idx] = buf[j];
    }
  }
}

template <bool kToHost, int kUnroll, typename Vec>
void launch_kv_copy(const KVTransferShape& s, const int64_t* ptrs, char* host_dev, const int64_t* ids,
                    const KVLaunchLimits& lim) {
  using namespace tierlm;
  int sms = 0;
  DeviceCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, s.device.device_id), "SM count");
  const int64_t chunk_vecs = s.chunk_bytes / static_cast<int64_t>(sizeof(Vec));
  constexpr int64_t kUnitVecs = int64_t{kKVThreads} * kUnroll;
  const int64_t end = lim.layer_begin + lim.layer_count;
  for (int64_t begin = lim.layer_begin; begin < end; begin += kKVMaxLayers) {
    const int32_t here = static_cast<int32_t>(std::min<int64_t>(kKVMaxLayers, end - begin));
    KVLayerTable table{};
    for (int32_t l = 0; l < here; ++l) {
      table.ptr[0][l] = reinterpret_cast<char*>(ptrs[begin + l]);
      table.ptr[1][l] = reinterpret_cast<char*>(ptrs[s.num_layers + begin + l]);
    }
    const int64_t units = s.num_pages * 2 * here * div_ceil(chunk_vecs, kUnitVecs);
    int64_t grid = std::min<int64_t>(units, int64_t{sms} * lim.blocks_per_sm);
    if (lim.max_blocks > 0) grid = std::min<int64_t>(grid, lim.max_blocks);
    LaunchKernel(static_cast<unsigned>(grid), kKVThreads, s.device)(
        kv_copy_kernel<Vec, kUnroll, kToHost>, table, static_cast<int32_t>(begin), here, s.num_layers, host_dev, ids,
        s.num_pages, chunk_vecs);
  }
}

template <bool kToHost, int kUnroll>
void kv_transfer_cuda(tvm::ffi::TensorView layer_ptrs, tvm::ffi::TensorView k_ref, tvm::ffi::TensorView host,
                      tvm::ffi::TensorView page_ids, int64_t blocks_per_sm, int64_t max_blocks, int64_t layer_begin,
                      int64_t layer_count) {
  using namespace tierlm;
  const KVTransferShape s = check_kv_transfer_args<kDLCUDA>(layer_ptrs, k_ref, host, page_ids);
  ValueCheck(blocks_per_sm >= 0 && blocks_per_sm <= 64, "blocks_per_sm must be in [0, 64], got ", blocks_per_sm);
  ValueCheck(max_blocks >= 0, "max_blocks must be >= 0, got ", max_blocks);
  if (layer_count < 0) layer_count = s.num_layers - layer_begin;
  ValueCheck(layer_begin >= 0 && layer_count >= 0 && layer_begin + layer_count <= s.num_layers, "layers [",
             layer_begin, ", ", layer_begin + layer_count, ") out of range [0, ", s.num_layers, ")");
  if (s.num_pages == 0 || layer_count == 0) return;
  const KVLaunchLimits lim{blocks_per_sm == 0 ? kKVDefaultBlocksPerSM : blocks_per_sm, max_blocks, layer_begin,
                           layer_count};
  char* host_dev = nullptr;
  if (s.host_device.device_type == kDLCUDA) {  // a device staging buffer: a plain device-to-device copy
    ValueCheck(s.host_device.device_id == s.device.device_id, "host_buf is on cuda:", s.host_device.device_id,
               " but the pool is on cuda:", s.device.device_id);
    host_dev = data_ptr<char>(host);
  } else {  // the GPU addresses pinned host memory through its (UVA) device pointer
    cudaPointerAttributes attr{};
    DeviceCheck(cudaPointerGetAttributes(&attr, data_ptr<void>(host)), "querying host_buf");
    ValueCheck(attr.type == cudaMemoryTypeHost && attr.devicePointer != nullptr,
               "host_buf must be pinned host memory (torch.empty(..., pin_memory=True)); got memory type ",
               static_cast<int>(attr.type));
    host_dev = static_cast<char*>(attr.devicePointer);
  }
  const int64_t* ptrs = data_ptr<const int64_t>(layer_ptrs);
  // Widest vector every address and the chunk size are aligned to (16 bytes for any real pool).
  uint64_t bits = static_cast<uint64_t>(s.chunk_bytes) | reinterpret_cast<uintptr_t>(host_dev);
  for (int64_t j : irange(2 * s.num_layers)) bits |= static_cast<uint64_t>(ptrs[j]);
  const int64_t* ids = data_ptr<const int64_t>(page_ids);
  if (bits % 16 == 0) {
    launch_kv_copy<kToHost, kUnroll, uint4>(s, ptrs, host_dev, ids, lim);
  } else if (bits % 8 == 0) {
    launch_kv_copy<kToHost, kUnroll, uint2>(s, ptrs, host_dev, ids, lim);
  } else if (bits % 4 == 0) {
    launch_kv_copy<kToHost, kUnroll, uint32_t>(s, ptrs, host_dev, ids, lim);
  } else if (bits % 2 == 0) {
    launch_kv_copy<kToHost, kUnroll, uint16_t>(s, ptrs, host_dev, ids, lim);
  } else {
    launch_kv_copy<kToHost, kUnroll, uint8_t>(s, ptrs, host_dev, ids, lim);
  }
}

// Entry points. layer_count < 0 means "every layer from layer_begin"; max_blocks 0 means no cap.
template <int kUnroll>
void kv_device_to_host_cuda(tvm::ffi::TensorView layer_ptrs, tvm::ffi::TensorView k_ref, tvm::ffi::TensorView host,
                            tvm::ffi::TensorView page_ids, int64_t blocks_per_sm, int64_t max_blocks,
                            int64_t layer_begin, int64_t layer_count) {
  kv_transfer_cuda<true, kUnroll>(layer_ptrs, k_ref, host, page_ids, blocks_per_sm, max_blocks, layer_begin,
                                  layer_count);
}

template <int kUnroll>
void kv_host_to_device_cuda(tvm::ffi::TensorView layer_ptrs, tvm::ffi::TensorView k_ref, tvm::ffi::TensorView host,
                            tvm::ffi::TensorView page_ids, int64_t blocks_per_sm, int64_t max_blocks,
                            int64_t layer_begin, int64_t layer_count) {
  kv_transfer_cuda<false, kUnroll>(layer_ptrs, k_ref, host, page_ids, blocks_per_sm, max_blocks, layer_begin,
                                   layer_count);
}

}  // namespace tierlm_kernels
