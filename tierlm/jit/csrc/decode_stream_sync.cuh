// The decode stream's shared pieces: its op table row, the ring's mbarrier and bulk-copy instructions, and the
// split grid barrier between ops (tierlm/jit/csrc/decode_stream.cuh says what the stream is).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace tierlm_kernels {
namespace decode_stream {

constexpr int kConsumerWarps = 8;
constexpr int kConsumers = kConsumerWarps * 32;
constexpr int kThreads = kConsumers + 32;  // + one producer warp
constexpr int kStageBytes = 32768;
constexpr int kHeadDim = 128;
constexpr int kMaxGroup = 8;     // q heads per KV head
constexpr int kChunkTiles = 64;  // tiles whose partial sums wait in shared memory for one epilogue pass
constexpr int kAhead = 8;        // context tokens per warp an attention item loads before its q is ready
// Shared memory: the header (mbarriers and the tile each stage holds, the norm's sums, a flag, two chunks of
// partial sums and their tiles), then the ring, then x (fp32; between GEMVs an attention item's scratch).
constexpr int kTileOfOffset = 256, kRedOffset = 512, kFlagOffset = 768, kPartOffset = 1024;
constexpr int kPartTileOffset = kPartOffset + 2 * kChunkTiles * kConsumerWarps * 4;
constexpr int kHeaderBytes = kPartTileOffset + 2 * kChunkTiles * 4;
constexpr int kOpFields = 33;

enum : int64_t { kGemv = 0, kAttention = 1 };
enum : int64_t { kVector = 0, kNorm = 1, kEmbedNorm = 2 };
enum : int64_t { kStore = 0, kAdd = 1, kSiluMul = 2 };
enum : int { kWeightsOnly = 1, kNoWaits = 2, kNoAttention = 4, kNoDots = 8 };  // launch flags: probes

struct Op {  // kOpFields int64 values; field order = OP_FIELDS in tierlm/kernels/decode_stream.py
  int64_t type, n, k, rows, segs, in_mode, epilogue, stagger;
  int64_t weight, input, norm_weight, output, embed, token, eps_bits, tiles;
  int64_t qkv, k_cache, v_cache, req_to_token, table_stride, req_row, seq_len, out_loc;
  int64_t cos, sin, partial, head_count, q_heads, kv_heads, splits, scale_bits;
  int64_t claim;  // the op's tile counter, from which the CTAs' producers take tiles
};
static_assert(sizeof(Op) == kOpFields * 8, "Op must mirror the table's row");

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n .reg .pred done;\n WAIT:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      " @!done bra WAIT;\n}" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void bulk_load(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}
// The consumer warps only (the producer never joins): named barrier 1.
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, %0;" ::"n"(kConsumers) : "memory"); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ int64_t first_item(int64_t cta, int64_t stagger, int64_t grid) {
  return ((cta - stagger) % grid + grid) % grid;
}
// 4 bf16 values (8 bytes) as floats.
__device__ __forceinline__ void unpack4(uint2 b, float* out) {
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&b.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&b.y));
  out[0] = lo.x, out[1] = lo.y, out[2] = hi.x, out[3] = hi.y;
}

__device__ __forceinline__ float bits_float(int64_t b) { return __int_as_float(static_cast<int>(b)); }

// A probe: stamps[i] = the global timer (ns), where a trace buffer was given.
__device__ __forceinline__ void stamp(uint64_t* stamps, int i) {
  if (stamps != nullptr && threadIdx.x == 0) {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    stamps[i] = t;
  }
}

// Op o's CTAs count themselves done (cooperative groups' grid barrier, split in its two halves).
__device__ __forceinline__ void arrive(int* counter) {
  consumers_sync();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1);
  }
}
__device__ __forceinline__ void wait_all(const int* counter, int grid) {
  if (threadIdx.x == 0) {
    while (*reinterpret_cast<const volatile int*>(counter) < grid) __nanosleep(64);
    __threadfence();
  }
  consumers_sync();
}

}  // namespace decode_stream
}  // namespace tierlm_kernels
