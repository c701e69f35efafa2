// KV page transfer, CUDA version: device pool <-> pinned page-first host pool in ONE launch per batch.
// Layout and arguments: kv_transfer_common.h.
//
// The GPU reads/writes the pinned host buffer directly through unified virtual addressing (no staging
// copy, no DMA engine): each block copies 16-byte vectors of one (page, region) chunk, every thread
// keeping kUnroll loads in flight, and the grid strides over all chunks of the batch so that thousands
// of PCIe requests are outstanding at once. Runs on PyTorch's current stream and does not synchronise:
// the caller orders any CPU access to the host pages after the stream (event / synchronize).
#pragma once

#include "kv_transfer_common.h"

#include <tierlm/cuda.h>

#include <algorithm>
#include <cstdint>

namespace tierlm_kernels {

constexpr int kKVMaxRegions = 128;  // regions per launch (kernel parameter space); more = more launches
constexpr int kKVThreads = 256;
// Tuning knobs (the benchmark sweeps them): vectors each thread loads before storing (template
// argument kUnroll), resident blocks per SM (runtime argument blocks_per_sm; 0 = 8) and a cap on
// the grid (max_blocks).
constexpr int kKVDefaultBlocksPerSM = 8;

// Which regions one call copies and how many blocks it may occupy. A small `max_blocks` leaves most SMs
// to the model's kernels while a transfer runs beside them (PCIe needs far fewer warps than SMs have).
struct KVLaunchLimits {
  int64_t blocks_per_sm = kKVDefaultBlocksPerSM;
  int64_t max_blocks = 0;  // 0 = no cap beyond blocks_per_sm x SMs
  int64_t region_begin = 0;
  int64_t region_count = 0;
};

// Regions [region_begin, region_begin + regions_here) of one launch; fits the 4 KiB parameter space.
struct KVRegionTable {
  char* ptr[kKVMaxRegions];
  int64_t chunk_bytes[kKVMaxRegions];
  int64_t host_offset[kKVMaxRegions];
};

template <typename Vec, int kUnroll, bool kToHost>
__global__ void __launch_bounds__(kKVThreads)
    kv_copy_kernel(const __grid_constant__ KVRegionTable table, int32_t regions_here, char* host, int64_t page_bytes,
                   const int64_t* __restrict__ ids, int64_t n, int64_t units_per_chunk) {
  constexpr int64_t kUnitVecs = int64_t{kKVThreads} * kUnroll;
  const int64_t total_units = n * regions_here * units_per_chunk;
  // Consecutive units walk one page's chunks in host order, so in-flight writes to host are contiguous.
  for (int64_t u = blockIdx.x; u < total_units; u += gridDim.x) {
    const int64_t c = u / units_per_chunk;
    const int64_t seg = u - c * units_per_chunk;
    const int64_t i = c / regions_here;
    const int32_t r = static_cast<int32_t>(c - i * regions_here);
    const int64_t chunk_bytes = table.chunk_bytes[r];
    const int64_t chunk_vecs = chunk_bytes / static_cast<int64_t>(sizeof(Vec));
    if (seg * kUnitVecs >= chunk_vecs) continue;  // a shorter region than the launch's longest
    const int64_t dev_page = ids[i], host_page = ids[n + i];
    Vec* dev = reinterpret_cast<Vec*>(table.ptr[r] + dev_page * chunk_bytes);
    Vec* hst = reinterpret_cast<Vec*>(host + host_page * page_bytes + table.host_offset[r]);
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
void launch_kv_copy(const KVTransferShape& s, const int64_t* regions, char* host_dev, const int64_t* ids,
                    const KVLaunchLimits& lim) {
  using namespace tierlm;
  int sms = 0;
  DeviceCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, s.device.device_id), "SM count");
  constexpr int64_t kUnitVecs = int64_t{kKVThreads} * kUnroll;
  const int64_t R = s.num_regions;
  const int64_t end = lim.region_begin + lim.region_count;
  for (int64_t begin = lim.region_begin; begin < end; begin += kKVMaxRegions) {
    const int32_t here = static_cast<int32_t>(std::min<int64_t>(kKVMaxRegions, end - begin));
    KVRegionTable table{};
    int64_t longest = 0;
    for (int32_t j = 0; j < here; ++j) {
      table.ptr[j] = reinterpret_cast<char*>(regions[begin + j]);
      table.chunk_bytes[j] = regions[R + begin + j];
      table.host_offset[j] = regions[2 * R + begin + j];
      longest = std::max(longest, table.chunk_bytes[j]);
    }
    const int64_t units_per_chunk = div_ceil(longest / static_cast<int64_t>(sizeof(Vec)), kUnitVecs);
    const int64_t units = s.num_pages * here * units_per_chunk;
    int64_t grid = std::min<int64_t>(units, int64_t{sms} * lim.blocks_per_sm);
    if (lim.max_blocks > 0) grid = std::min<int64_t>(grid, lim.max_blocks);
    LaunchKernel(static_cast<unsigned>(grid), kKVThreads, s.device)(
        kv_copy_kernel<Vec, kUnroll, kToHost>, table, here, host_dev, s.page_bytes, ids, s.num_pages,
        units_per_chunk);
  }
}

template <bool kToHost, int kUnroll>
void kv_transfer_cuda(tvm::ffi::TensorView regions, tvm::ffi::TensorView host, tvm::ffi::TensorView page_ids,
                      int64_t num_device_pages, int64_t blocks_per_sm, int64_t max_blocks, int64_t region_begin,
                      int64_t region_count) {
  using namespace tierlm;
  const KVTransferShape s = check_kv_transfer_args<kDLCUDA>(regions, host, page_ids, num_device_pages);
  ValueCheck(blocks_per_sm >= 0 && blocks_per_sm <= 64, "blocks_per_sm must be in [0, 64], got ", blocks_per_sm);
  ValueCheck(max_blocks >= 0, "max_blocks must be >= 0, got ", max_blocks);
  if (region_count < 0) region_count = s.num_regions - region_begin;
  ValueCheck(region_begin >= 0 && region_count >= 0 && region_begin + region_count <= s.num_regions, "regions [",
             region_begin, ", ", region_begin + region_count, ") out of range [0, ", s.num_regions, ")");
  if (s.num_pages == 0 || region_count == 0) return;
  const KVLaunchLimits lim{blocks_per_sm == 0 ? kKVDefaultBlocksPerSM : blocks_per_sm, max_blocks, region_begin,
                           region_count};
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
  const int64_t* table = data_ptr<const int64_t>(regions);
  // Widest vector every address, chunk size and offset is aligned to (16 bytes for any real pool).
  uint64_t bits = static_cast<uint64_t>(s.page_bytes) | reinterpret_cast<uintptr_t>(host_dev);
  for (int64_t j : irange(3 * s.num_regions)) bits |= static_cast<uint64_t>(table[j]);
  const int64_t* ids = data_ptr<const int64_t>(page_ids);
  if (bits % 16 == 0) {
    launch_kv_copy<kToHost, kUnroll, uint4>(s, table, host_dev, ids, lim);
  } else if (bits % 8 == 0) {
    launch_kv_copy<kToHost, kUnroll, uint2>(s, table, host_dev, ids, lim);
  } else if (bits % 4 == 0) {
    launch_kv_copy<kToHost, kUnroll, uint32_t>(s, table, host_dev, ids, lim);
  } else if (bits % 2 == 0) {
    launch_kv_copy<kToHost, kUnroll, uint16_t>(s, table, host_dev, ids, lim);
  } else {
    launch_kv_copy<kToHost, kUnroll, uint8_t>(s, table, host_dev, ids, lim);
  }
}

// Entry points. region_count < 0 means "every region from region_begin"; max_blocks 0 means no cap.
template <int kUnroll>
void kv_device_to_host_cuda(tvm::ffi::TensorView regions, tvm::ffi::TensorView host, tvm::ffi::TensorView page_ids,
                            int64_t num_device_pages, int64_t blocks_per_sm, int64_t max_blocks, int64_t region_begin,
                            int64_t region_count) {
  kv_transfer_cuda<true, kUnroll>(regions, host, page_ids, num_device_pages, blocks_per_sm, max_blocks, region_begin,
                                  region_count);
}

template <int kUnroll>
void kv_host_to_device_cuda(tvm::ffi::TensorView regions, tvm::ffi::TensorView host, tvm::ffi::TensorView page_ids,
                            int64_t num_device_pages, int64_t blocks_per_sm, int64_t max_blocks, int64_t region_begin,
                            int64_t region_count) {
  kv_transfer_cuda<false, kUnroll>(regions, host, page_ids, num_device_pages, blocks_per_sm, max_blocks, region_begin,
                                   region_count);
}

}  // namespace tierlm_kernels
