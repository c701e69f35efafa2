// A batch-1 decode step of a dense pre-norm decoder (Llama shape) as ONE persistent launch.
//
// Why: at batch 1 a step is a weight read (about 16 GB for an 8B model); launched op by op, every kernel
// boundary drains the memory pipe (a launch's ramp and tail, the small kernels between the linears). Here a
// producer warp per SM streams every weight of the step, op after op, into a ring of shared-memory stages
// with bulk asynchronous copies (`cp.async.bulk`, completion on an mbarrier). It never waits for
// activations, only for a free stage, so the reads of the next op's weights run on while the consumers wait
// for the previous op to finish on every SM.
//
// Ops (a table built by tierlm/kernels/decode_stream.py, `Op` below mirrors its fields):
//   GEMV       out[j] for j in [0, n): dot(weight row j, x) over k; x is an fp32 vector, the RMSNorm of the
//              fp32 residual, or (the first op) the RMSNorm of the token's embedding row, which each CTA
//              also copies into its slice of the residual. Epilogues: store, add into the residual, or
//              silu(gate) * up where a tile holds `rows` gate rows and the `rows` up rows n further on.
//   ATTENTION  rotary on q and the new k, the new k/v stored into the layer's KV cache, attention of the
//              q heads of one KV head over a split of the context; the last split of a head to finish merges
//              the splits into the fp32 output.
// Dependencies: op o reads only what op o-1 wrote (or earlier ops, which o-1's completion implies); CTAs
// count themselves done per op on a counter that the consumers of the next op wait for. Every CTA must be
// resident at once: the launch is cooperative. Activations that cross CTAs are read through L2 (`ld.cg`).
//
// Measured, not served: on an H100 the step is slower than the engine's kernel per op, its weight stream alone
// faster (docs/benchmarks.md says where the rest goes); the engine does not launch it.
#pragma once

#include "decode_stream_attention.cuh"
#include "decode_stream_sync.cuh"

#include <tierlm/cuda.h>
#include <tierlm/tensor.h>
#include <tierlm/utils.h>

#include <tvm/ffi/container/tensor.h>

namespace tierlm_kernels {
namespace decode_stream {

struct NormAhead {  // this thread's norm weights for x's first 4 * kConsumers * 4 values, loaded before the wait
  float g[16];
};

__device__ __forceinline__ void load_norm(const Op& op, NormAhead& na) {
  if (op.in_mode == kVector) return;
  const uint2* g = reinterpret_cast<const uint2*>(op.norm_weight);
#pragma unroll
  for (int m = 0; m < 4; ++m) {
    const int i = threadIdx.x + m * kConsumers;
    if (i < op.k / 4) unpack4(__ldg(g + i), na.g + 4 * m);
  }
}

// x in shared memory, split by halves of 8-value groups: values 8g..8g+3 at float4 g of the first k/2 floats,
// 8g+4..8g+7 at float4 g of the second, so that the lanes of a warp, 8 values each, read it without bank
// conflicts. `x_at(xs, k, i)`: where float4 i of x (values 4i..4i+3) lives.
__device__ __forceinline__ float4* x_at(float* xs, int64_t k, int i) {
  return reinterpret_cast<float4*>(xs + (i & 1) * (k / 2)) + (i >> 1);
}

// x (fp32, k values) into shared memory: a vector, or the RMSNorm of the residual / of an embedding row.
__device__ __forceinline__ void load_input(const Op& op, float* xs, float* red, const NormAhead& na) {
  const int tid = threadIdx.x, k4 = static_cast<int>(op.k / 4);
  if (op.in_mode == kVector) {
    const float4* in = reinterpret_cast<const float4*>(op.input);
    for (int i = tid; i < k4; i += kConsumers) *x_at(xs, op.k, i) = __ldcg(in + i);
    consumers_sync();
    return;
  }
  const float4* in = reinterpret_cast<const float4*>(op.input);
  const uint2* row = reinterpret_cast<const uint2*>(op.embed) +
                     (op.in_mode == kEmbedNorm ? *reinterpret_cast<const int64_t*>(op.token) * k4 : 0);
  float ss = 0.f;
  for (int i = tid; i < k4; i += kConsumers) {
    float4 v;
    if (op.in_mode == kNorm) {
      v = __ldcg(in + i);
    } else {
      float f[4];
      unpack4(row[i], f);
      v = make_float4(f[0], f[1], f[2], f[3]);
    }
    *x_at(xs, op.k, i) = v;
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  ss = warp_sum(ss);
  if ((tid & 31) == 0) red[tid >> 5] = ss;
  consumers_sync();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kConsumerWarps; ++w) total += red[w];
  const float rstd = rsqrtf(total / static_cast<float>(op.k) + bits_float(op.eps_bits));
#pragma unroll
  for (int m = 0; m < 4; ++m) {
    const int i = tid + m * kConsumers;
    if (i < k4) {
      float4* x = x_at(xs, op.k, i);
      x->x *= rstd * na.g[4 * m], x->y *= rstd * na.g[4 * m + 1];
      x->z *= rstd * na.g[4 * m + 2], x->w *= rstd * na.g[4 * m + 3];
    }
  }
  const uint2* g = reinterpret_cast<const uint2*>(op.norm_weight);
  for (int i = tid + 4 * kConsumers; i < k4; i += kConsumers) {
    float f[4];
    unpack4(__ldg(g + i), f);
    float4* x = x_at(xs, op.k, i);
    x->x *= rstd * f[0], x->y *= rstd * f[1], x->z *= rstd * f[2], x->w *= rstd * f[3];
  }
  consumers_sync();
}

// The first op also seeds the residual: CTA c copies its slice of the embedding row.
__device__ void seed_residual(const Op& op) {
  const int64_t k = op.k, per = (k + gridDim.x - 1) / gridDim.x, lo = blockIdx.x * per;
  const int64_t hi = lo + per < k ? lo + per : k;
  const int64_t token = *reinterpret_cast<const int64_t*>(op.token);
  const __nv_bfloat16* row = reinterpret_cast<const __nv_bfloat16*>(op.embed) + token * k;
  float* resid = reinterpret_cast<float*>(op.input);
  for (int64_t i = lo + threadIdx.x; i < hi; i += kConsumers) __stcg(resid + i, __bfloat162float(row[i]));
}

// 8 weights against 8 values of x.
__device__ __forceinline__ float dot8(uint4 w, float4 a, float4 b) {
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&w);
  const float2 w0 = __bfloat1622float2(p[0]), w1 = __bfloat1622float2(p[1]);
  const float2 w2 = __bfloat1622float2(p[2]), w3 = __bfloat1622float2(p[3]);
  return w0.x * a.x + w0.y * a.y + w1.x * a.z + w1.y * a.w + w2.x * b.x + w2.y * b.y + w3.x * b.z + w3.y * b.w;
}

// One warp's share of a tile in a stage (rows*segs weight rows of k values; the warps split the rows, then k):
// its partial dot product. Warps take tiles independently; no block barrier per tile.
__device__ __forceinline__ float gemv_part(const Op& op, const unsigned char* stage, const float* xs) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int k = static_cast<int>(op.k), per_row = kConsumerWarps / static_cast<int>(op.rows * op.segs);
  const int r = warp / per_row, part = warp % per_row, span = k / per_row;
  const uint4* w = reinterpret_cast<const uint4*>(stage) + (static_cast<int64_t>(r) * k + part * span) / 8;
  const float4* xa = reinterpret_cast<const float4*>(xs) + part * span / 8;
  const float4* xb = reinterpret_cast<const float4*>(xs + k / 2) + part * span / 8;
  const int groups = span / 8;
  float acc0 = 0.f, acc1 = 0.f;
  int g = lane;
  for (; g + 32 < groups; g += 64) {
    acc0 += dot8(w[g], xa[g], xb[g]);
    acc1 += dot8(w[g + 32], xa[g + 32], xb[g + 32]);
  }
  if (g < groups) acc0 += dot8(w[g], xa[g], xb[g]);
  return warp_sum(acc0 + acc1);
}

// The epilogue of `count` tiles (`tiles` holds their indices), their warps' sums in `part`. An adding epilogue
// reads the residual rows it updates here, once per chunk (no other CTA writes them during the op), instead of
// once per tile beside the dot product, where a round trip to L2 outlasts the tile and holds its stage.
__device__ void gemv_epilogue(const Op& op, const int* tiles, int count, const float* part) {
  const int rows = static_cast<int>(op.rows), per_row = kConsumerWarps / static_cast<int>(op.rows * op.segs);
  float* out = reinterpret_cast<float*>(op.output);
  for (int i = threadIdx.x; i < count * rows; i += kConsumers) {
    const int tl = i / rows, r = i % rows;
    const int64_t j = static_cast<int64_t>(tiles[tl]) * rows + r;
    const float before = op.epilogue == kAdd ? __ldcg(out + j) : 0.f;
    const float* sums = part + tl * kConsumerWarps;
    float a = 0.f;
    for (int p = 0; p < per_row; ++p) a += sums[r * per_row + p];
    if (op.epilogue == kSiluMul) {
      float u = 0.f;
      for (int p = 0; p < per_row; ++p) u += sums[(rows + r) * per_row + p];
      __stcg(out + j, a / (1.f + __expf(-a)) * u);
    } else {
      __stcg(out + j, before + a);
    }
  }
}

// The producer warp (its lane 0): the weights of op after op, as far as the ring allows, one bulk copy per
// segment of a tile; a stage holding tile -1 ends an op for this CTA. Tiles are taken from the op's counter,
// so SMs that read faster take more of them (a fixed deal round the CTAs measured slower).
template <int kStages>
__device__ void produce(const Op* ops, int num_ops, uint64_t* full, uint64_t* empty, int64_t* tile_of,
                        unsigned char* ring) {
  uint32_t it = 0;
  for (int o = 0; o < num_ops; ++o) {
    const Op& op = ops[o];
    if (op.type != kGemv) continue;
    const uint32_t seg = static_cast<uint32_t>(op.rows * op.k * 2);
    const unsigned char* w = reinterpret_cast<const unsigned char*>(op.weight);
    int* claim = reinterpret_cast<int*>(op.claim);
    int64_t next = atomicAdd(claim, 1);  // taken a tile ahead: the atomic's latency hides behind the wait
    for (;; ++it) {
      const uint32_t slot = it % kStages;
      mbar_wait(&empty[slot], ((it / kStages) & 1) ^ 1);
      const int64_t t = next;
      if (t >= op.tiles) {
        tile_of[slot] = -1;
        mbar_arrive(&full[slot]);
        ++it;
        break;
      }
      next = atomicAdd(claim, 1);
      tile_of[slot] = t;
      mbar_expect_tx(&full[slot], seg * static_cast<uint32_t>(op.segs));
      bulk_load(ring + slot * kStageBytes, w + t * seg, seg, &full[slot]);
      if (op.segs == 2) bulk_load(ring + slot * kStageBytes + seg, w + (t * seg + op.n * op.k * 2), seg, &full[slot]);
    }
  }
}

template <int kStages>
__global__ void __launch_bounds__(kThreads, 1)
    decode_stream_kernel(const Op* __restrict__ ops, int num_ops, int* __restrict__ counters, int flags,
                         uint64_t* __restrict__ trace) {
  const int weights_only = flags & kWeightsOnly;
  extern __shared__ __align__(128) unsigned char smem[];
  uint64_t* full = reinterpret_cast<uint64_t*>(smem);
  uint64_t* empty = full + kStages;
  int64_t* tile_of = reinterpret_cast<int64_t*>(smem + kTileOfOffset);
  float* red = reinterpret_cast<float*>(smem + kRedOffset);
  int* flag = reinterpret_cast<int*>(smem + kFlagOffset);
  float* part = reinterpret_cast<float*>(smem + kPartOffset);  // [2][kChunkTiles][kConsumerWarps]
  int* part_tile = reinterpret_cast<int*>(smem + kPartTileOffset);  // [2][kChunkTiles]
  unsigned char* ring = smem + kHeaderBytes;
  float* xs = reinterpret_cast<float*>(ring + kStages * kStageBytes);
  const int grid = static_cast<int>(gridDim.x), cta = static_cast<int>(blockIdx.x);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages; ++i) mbar_init(&full[i], 1), mbar_init(&empty[i], kConsumerWarps);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (threadIdx.x >= kConsumers) {
    if (threadIdx.x == kConsumers) produce<kStages>(ops, num_ops, full, empty, tile_of, ring);
    return;
  }

  uint32_t it = 0;
  for (int o = 0; o < num_ops; ++o) {
    const Op& op = ops[o];
    uint64_t* stamps = trace ? trace + (static_cast<int64_t>(o) * grid + cta) * 4 : nullptr;
    stamp(stamps, 0);
    if (op.type == kGemv) {
      if (op.in_mode == kEmbedNorm && !weights_only) seed_residual(op);
      NormAhead na;
      load_norm(op, na);
      bool ready = weights_only != 0;  // the input is in shared memory (a probe reads none)
      int64_t done = 0;  // tiles taken; their partial sums alternate between two chunks
      for (;; ++it) {
        const uint32_t slot = it % kStages;
        mbar_wait(&full[slot], (it / kStages) & 1);
        const int64_t t = reinterpret_cast<volatile int64_t*>(tile_of)[slot];
        if (t < 0 || weights_only) {
          __syncwarp();
          if (lane == 0) mbar_arrive(&empty[slot]);
          if (t >= 0) continue;
          ++it;
          break;
        }
        if (!ready) {
          if (o > 0 && !(flags & kNoWaits)) wait_all(counters + o - 1, grid);
          else consumers_sync();
          stamp(stamps, 1);
          load_input(op, xs, red, na);
          stamp(stamps, 2);
          ready = true;
        }
        const int c = static_cast<int>(done / kChunkTiles) & 1, at = static_cast<int>(done % kChunkTiles);
        const float acc = flags & kNoDots ? 0.f : gemv_part(op, ring + slot * kStageBytes, xs);
        __syncwarp();
        if (lane == 0) {
          part[(c * kChunkTiles + at) * kConsumerWarps + warp] = acc;
          if (warp == 0) part_tile[c * kChunkTiles + at] = static_cast<int>(t);
          mbar_arrive(&empty[slot]);  // this warp is done with the stage
        }
        if (++done % kChunkTiles == 0) {
          consumers_sync();
          gemv_epilogue(op, part_tile + c * kChunkTiles, kChunkTiles, part + c * kChunkTiles * kConsumerWarps);
        }
      }
      if (done % kChunkTiles) {
        const int c = static_cast<int>(done / kChunkTiles) & 1;
        consumers_sync();
        gemv_epilogue(op, part_tile + c * kChunkTiles, static_cast<int>(done % kChunkTiles),
                      part + c * kChunkTiles * kConsumerWarps);
      }
    } else if (!weights_only && !(flags & kNoAttention)) {
      const int64_t items = op.kv_heads * op.splits;
      int64_t i = first_item(cta, op.stagger, grid);
      if (i < items) {
        ItemSpan sp = item_span(op, i);
        KVAhead kv;
        load_kv(op, i, sp, sp.lo + warp, kv);  // before the wait: the cache's old tokens are ready
        load_rope(op, sp, kv);
        if (!(flags & kNoWaits)) wait_all(counters + o - 1, grid);
        stamp(stamps, 1);
        for (;;) {
          attention_item_any(op, i, sp, kv, xs, flag, stamps);
          consumers_sync();  // the item's shared scratch and flag are free again
          if ((i += grid) >= items) break;
          sp = item_span(op, i);
          load_kv(op, i, sp, sp.lo + warp, kv);
          load_rope(op, sp, kv);
        }
      }
    }
    stamp(stamps, 3);
    arrive(counters + o);  // its barrier orders every thread's stores before thread 0's fence and count
  }
}

// ops: int64 [num_ops, kOpFields] on the GPU; counters: int32, zeroed here first (per op: CTAs done, then
// tiles taken; then per (layer, KV head): the splits done). One CTA per SM of `num_ctas`; `max_k`: the widest x.
// `flags` (probes, 0 to serve): kWeightsOnly, how fast the ring alone streams the weights (outputs are not
// written); kNoWaits, each op started without waiting for the one before (wrong outputs; the consumers' speed);
// kNoAttention, the attention ops skipped; kNoDots, the tiles' dot products skipped (both: wrong outputs).
// `trace`: empty, or int64 [num_ops, num_ctas, 4] for a probe's timestamps (ns): op start, dependencies met,
// input loaded, op done.
template <int kStages>
void decode_stream_cuda(tvm::ffi::TensorView ops, tvm::ffi::TensorView counters, int64_t num_ctas, int64_t max_k,
                        int64_t flags, tvm::ffi::TensorView trace) {
  using namespace tierlm;
  SymbolicSize num_ops{"num_ops"};
  SymbolicSize fields{"fields"};
  SymbolicSize num_counters{"num_counters"};
  SymbolicDevice device;
  TensorMatcher({num_ops, fields}).with_dtype<int64_t>().with_device<kDLCUDA>(device).verify(ops, "ops");
  TensorMatcher({num_counters}).with_dtype<int32_t>().with_device<kDLCUDA>(device).verify(counters, "counters");
  ValueCheck(fields.unwrap() == kOpFields, "ops must have ", kOpFields, " fields per row, got ", fields.unwrap());
  ValueCheck(num_counters.unwrap() >= num_ops.unwrap(), "need a counter per op");
  const size_t smem = kHeaderBytes + static_cast<size_t>(kStages) * kStageBytes + static_cast<size_t>(max_k) * 4;
  auto kernel = decode_stream_kernel<kStages>;
  DeviceCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
              "setting the shared memory size (", smem, " bytes)");
  const cudaStream_t stream = current_stream(device.unwrap());
  DeviceCheck(cudaMemsetAsync(data_ptr<int32_t>(counters), 0, num_counters.unwrap() * sizeof(int32_t), stream),
              "zeroing the counters");
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(num_ctas));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  DeviceCheck(cudaLaunchKernelEx(&cfg, kernel, reinterpret_cast<const Op*>(data_ptr<int64_t>(ops)),
                                 static_cast<int>(num_ops.unwrap()), data_ptr<int32_t>(counters),
                                 static_cast<int>(flags),
                                 trace.numel() ? reinterpret_cast<uint64_t*>(data_ptr<int64_t>(trace)) : nullptr),
              "launching the decode stream (", num_ctas, " CTAs, ", smem, " bytes of shared memory)");
}

}  // namespace decode_stream
}  // namespace tierlm_kernels
