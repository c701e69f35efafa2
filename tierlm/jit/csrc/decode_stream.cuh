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
#include "decode_stream_gemv.cuh"
#include "decode_stream_sync.cuh"

#include <tierlm/cuda.h>
#include <tierlm/tensor.h>
#include <tierlm/utils.h>

#include <tvm/ffi/container/tensor.h>

namespace tierlm_kernels {
namespace decode_stream {

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
        load_ahead(op, i, sp, kv);  // before the wait: the cache's old tokens are ready
        if (!(flags & kNoWaits)) wait_all(counters + o - 1, grid);
        stamp(stamps, 1);
        for (;;) {
          attention_item_any(op, i, sp, kv, xs, flag, stamps);
          consumers_sync();  // the item's shared scratch and flag are free again
          if ((i += grid) >= items) break;
          sp = item_span(op, i);
          load_ahead(op, i, sp, kv);
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
