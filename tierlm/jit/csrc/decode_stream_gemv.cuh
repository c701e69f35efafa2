// The decode stream's GEMV pieces (tierlm/jit/csrc/decode_stream.cuh says what the stream is): the input x in
// shared memory (a vector, or an RMSNorm of the residual or of the token's embedding row), a warp's share of a
// tile, and the epilogues.
#pragma once

#include "decode_stream_sync.cuh"

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

}  // namespace decode_stream
}  // namespace tierlm_kernels
