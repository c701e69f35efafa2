// The decode stream's attention op: item (h, s) is KV head h's q heads over split s of the context.
//
// An item loads the K/V rows of its first tokens (kAhead per warp) before its q is ready: the cache's older
// tokens do not depend on this step, so those loads overlap the wait for the QKV projection. Then: rotary on
// q and on the new k, the new K/V rounded to bf16 and stored in the cache (by the warp whose token it is), an
// online softmax per warp, the warps merged in shared memory, the split's partial result stored; the last
// split of a head to finish (an arrival counter per head) merges the head's splits into the fp32 output.
#pragma once

#include "decode_stream_sync.cuh"

namespace tierlm_kernels {
namespace decode_stream {

struct KVAhead {  // K and V rows (4 bf16 per lane) of a warp's next kAhead tokens
  uint2 k[kAhead], v[kAhead];
};

struct ItemSpan {  // the context length (with the new token) and the item's tokens [lo, hi)
  int len, lo, hi;
};

__device__ __forceinline__ ItemSpan item_span(const Op& op, int64_t item) {
  const int splits = static_cast<int>(op.splits), s = static_cast<int>(item % splits);
  const int len = *reinterpret_cast<const int32_t*>(op.seq_len);
  const int chunk = (len + splits - 1) / splits, lo = s * chunk;
  return {len, lo, min(len, lo + chunk)};
}

// This warp's tokens t0, t0 + kConsumerWarps, ... (kAhead of them): their cached K/V rows (the new token's
// and those past `hi` stay zero).
__device__ __forceinline__ void load_kv(const Op& op, int64_t item, const ItemSpan& sp, int t0, KVAhead& kv) {
  const int h = static_cast<int>(item / op.splits), d0 = (threadIdx.x & 31) * 4;
  const int32_t* slots = reinterpret_cast<const int32_t*>(op.req_to_token) +
                         static_cast<int64_t>(*reinterpret_cast<const int32_t*>(op.req_row)) * op.table_stride;
  const int64_t slot_stride = op.kv_heads * kHeadDim, head_off = static_cast<int64_t>(h) * kHeadDim + d0;
  const __nv_bfloat16* kc = reinterpret_cast<const __nv_bfloat16*>(op.k_cache);
  const __nv_bfloat16* vc = reinterpret_cast<const __nv_bfloat16*>(op.v_cache);
  int32_t slot[kAhead];
#pragma unroll
  for (int u = 0; u < kAhead; ++u) {
    const int t = t0 + u * kConsumerWarps;
    slot[u] = t < sp.hi && t != sp.len - 1 ? slots[t] : -1;
  }
#pragma unroll
  for (int u = 0; u < kAhead; ++u) {
    kv.k[u] = kv.v[u] = make_uint2(0u, 0u);
    if (slot[u] >= 0) {
      kv.k[u] = __ldcg(reinterpret_cast<const uint2*>(kc + slot[u] * slot_stride + head_off));
      kv.v[u] = __ldcg(reinterpret_cast<const uint2*>(vc + slot[u] * slot_stride + head_off));
    }
  }
}

__device__ __forceinline__ void unpack4(uint2 b, float* out) {
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&b.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&b.y));
  out[0] = lo.x, out[1] = lo.y, out[2] = hi.x, out[3] = hi.y;
}

constexpr int kRow = kHeadDim + 2;  // a partial result: running max, sum of weights, unnormalised output
constexpr int kMaxSplits = 16;      // splits of the context per KV head (MAX_SPLITS in decode_stream.py)

// The last split of head h to finish merges the head's splits (read through L2) into the output: the splits'
// maxima and sums first (one round of loads), their weights per q head, then every output value's splits.
__device__ void merge_splits(const Op& op, int h, int group, float* sm) {
  const int splits = static_cast<int>(op.splits), n = splits * group;
  const float* parts = reinterpret_cast<const float*>(op.partial) + static_cast<int64_t>(h) * n * kRow;
  float* out = reinterpret_cast<float*>(op.output) + static_cast<int64_t>(h) * group * kHeadDim;
  float *mx = sm, *sum = sm + kMaxSplits * kMaxGroup, *weight = sum + kMaxSplits * kMaxGroup;
  for (int i = threadIdx.x; i < n; i += kConsumers) {
    mx[i] = __ldcg(parts + i * kRow);
    sum[i] = __ldcg(parts + i * kRow + 1);
  }
  consumers_sync();
  if (threadIdx.x < group) {
    const int j = threadIdx.x;
    float top = -INFINITY, den = 0.f;
    for (int p = 0; p < splits; ++p) top = fmaxf(top, mx[p * group + j]);
    for (int p = 0; p < splits; ++p) {
      const float m = mx[p * group + j];
      weight[p * group + j] = m == -INFINITY ? 0.f : __expf(m - top);
      den += sum[p * group + j] * weight[p * group + j];
    }
    for (int p = 0; p < splits; ++p) weight[p * group + j] /= den;
  }
  consumers_sync();
  for (int i = threadIdx.x; i < group * kHeadDim; i += kConsumers) {
    const int j = i / kHeadDim, d = i % kHeadDim;
    float num = 0.f;
#pragma unroll
    for (int p = 0; p < kMaxSplits; ++p)
      if (p < splits) num += __ldcg(parts + (p * group + j) * kRow + 2 + d) * weight[p * group + j];
    __stcg(out + i, num);
  }
}

// Item `item` once the QKV projection is done; `kv` holds this warp's first kAhead tokens' rows; kGroup q
// heads per KV head (a template argument: the per-head state then stays in registers).
// Shared scratch `sm`: kConsumerWarps * kGroup * kRow floats.
template <int kGroup>
__device__ __forceinline__ void attention_item(const Op& op, int64_t item, const ItemSpan& sp, KVAhead& kv, float* sm,
                                               int* flag, uint64_t* stamps) {
  constexpr int group = kGroup;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int hq = static_cast<int>(op.q_heads), hkv = static_cast<int>(op.kv_heads);
  const int splits = static_cast<int>(op.splits);
  const int h = static_cast<int>(item / splits), s = static_cast<int>(item % splits);
  const int64_t pos = sp.len - 1;
  const int d0 = lane * 4;
  const float* cs = reinterpret_cast<const float*>(op.cos) + pos * kHeadDim + d0;
  const float* sn = reinterpret_cast<const float*>(op.sin) + pos * kHeadDim + d0;
  const float* qkv = reinterpret_cast<const float*>(op.qkv);
  const float scale = bits_float(op.scale_bits);
  const int half = kHeadDim / 2, sign = d0 < half ? -1 : 1, mate = d0 < half ? d0 + half : d0 - half;
  float q[kGroup][4], m[kGroup], l[kGroup], acc[kGroup][4];
#pragma unroll
  for (int j = 0; j < kGroup; ++j) {
    m[j] = -INFINITY;
    l[j] = 0.f;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      acc[j][e] = 0.f;
      const float* qh = qkv + static_cast<int64_t>(h * group + j) * kHeadDim;
      q[j][e] = (__ldcg(qh + d0 + e) * cs[e] + sign * __ldcg(qh + mate + e) * sn[e]) * scale;
    }
  }
  float kn[4], vn[4];  // the new token's k (rotated) and v, rounded as the cache stores them
  {
    const float* kh = qkv + static_cast<int64_t>(hq + h) * kHeadDim;
    const float* vh = qkv + static_cast<int64_t>(hq + hkv + h) * kHeadDim;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      kn[e] = __bfloat162float(__float2bfloat16(__ldcg(kh + d0 + e) * cs[e] + sign * __ldcg(kh + mate + e) * sn[e]));
      vn[e] = __bfloat162float(__float2bfloat16(__ldcg(vh + d0 + e)));
    }
  }
  for (int t0 = sp.lo + warp; t0 < sp.hi; t0 += kConsumerWarps * kAhead) {
    if (t0 != sp.lo + warp) load_kv(op, item, sp, t0, kv);  // the first round was loaded ahead
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      const int t = t0 + u * kConsumerWarps;
      if (t >= sp.hi) break;
      float kk[4], vv[4];
      if (t == sp.len - 1) {  // the new token: from registers; this warp also stores it in the cache
        const int64_t at = *reinterpret_cast<const int64_t*>(op.out_loc) * hkv * kHeadDim + h * kHeadDim + d0;
        __nv_bfloat16* kc = reinterpret_cast<__nv_bfloat16*>(op.k_cache);
        __nv_bfloat16* vc = reinterpret_cast<__nv_bfloat16*>(op.v_cache);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          kk[e] = kn[e], vv[e] = vn[e];
          kc[at + e] = __float2bfloat16(kn[e]);
          vc[at + e] = __float2bfloat16(vn[e]);
        }
      } else {
        unpack4(kv.k[u], kk);
        unpack4(kv.v[u], vv);
      }
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        const float sc = warp_sum(q[j][0] * kk[0] + q[j][1] * kk[1] + q[j][2] * kk[2] + q[j][3] * kk[3]);
        const float mn = fmaxf(m[j], sc), alpha = __expf(m[j] - mn), p = __expf(sc - mn);
        l[j] = l[j] * alpha + p;
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] = acc[j][e] * alpha + p * vv[e];
        m[j] = mn;
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kGroup; ++j) {
    float* row = sm + (warp * group + j) * kRow;
    if (lane == 0) row[0] = m[j], row[1] = l[j];
#pragma unroll
    for (int e = 0; e < 4; ++e) row[2 + d0 + e] = acc[j][e];
  }
  consumers_sync();
  stamp(stamps, 2);  // a probe: the item's own work done; what follows is the merge
  float* part = reinterpret_cast<float*>(op.partial) + (static_cast<int64_t>(h) * splits + s) * group * kRow;
  for (int i = tid; i < group * kHeadDim; i += kConsumers) {
    const int j = i / kHeadDim, d = i % kHeadDim;
    float mx = -INFINITY;
    for (int w = 0; w < kConsumerWarps; ++w) mx = fmaxf(mx, sm[(w * group + j) * kRow]);
    float den = 0.f, num = 0.f;
    for (int w = 0; w < kConsumerWarps; ++w) {
      const float* row = sm + (w * group + j) * kRow;
      const float f = row[0] == -INFINITY ? 0.f : __expf(row[0] - mx);
      den += row[1] * f;
      num += row[2 + d] * f;
    }
    if (d == 0) __stcg(part + j * kRow, mx), __stcg(part + j * kRow + 1, den);
    __stcg(part + j * kRow + 2 + d, num);
  }
  consumers_sync();
  if (tid == 0) {
    __threadfence();  // the CTA's partial stores (ordered before by the barrier) before the count
    const int done = atomicAdd(reinterpret_cast<int*>(op.head_count) + h, 1);
    *flag = done == splits - 1;
    __threadfence();
  }
  consumers_sync();
  if (*flag) merge_splits(op, h, group, sm);
}

// attention_item for the op's q heads per KV head (1, 2, 4 or 8: tierlm/kernels/decode_stream.py checks).
__device__ __forceinline__ void attention_item_any(const Op& op, int64_t item, const ItemSpan& sp, KVAhead& kv,
                                                   float* sm, int* flag, uint64_t* stamps) {
  switch (op.q_heads / op.kv_heads) {
    case 1: return attention_item<1>(op, item, sp, kv, sm, flag, stamps);
    case 2: return attention_item<2>(op, item, sp, kv, sm, flag, stamps);
    case 4: return attention_item<4>(op, item, sp, kv, sm, flag, stamps);
    default: return attention_item<8>(op, item, sp, kv, sm, flag, stamps);
  }
}

}  // namespace decode_stream
}  // namespace tierlm_kernels
