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

struct KVAhead {  // K and V rows (4 bf16 per lane) of a warp's next kAhead tokens; the rotary factors of the
                  // lane's 4 dimensions at the new token's position
  uint2 k[kAhead], v[kAhead];
  float4 cs, sn;
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

// What an item loads before its q is ready (none of it depends on the step's activations): this warp's first
// round of K/V rows and the rotary factors of this lane's dimensions at the new token's position.
__device__ __forceinline__ void load_ahead(const Op& op, int64_t item, const ItemSpan& sp, KVAhead& kv) {
  load_kv(op, item, sp, sp.lo + (threadIdx.x >> 5), kv);
  const int64_t at = static_cast<int64_t>(sp.len - 1) * kHeadDim + (threadIdx.x & 31) * 4;
  kv.cs = __ldg(reinterpret_cast<const float4*>(op.cos) + at / 4);
  kv.sn = __ldg(reinterpret_cast<const float4*>(op.sin) + at / 4);
}

constexpr int kRow = kHeadDim + 2;  // a partial result: running max, sum of weights, unnormalised output
constexpr int kMaxSplits = 16;      // splits of the context per KV head (MAX_SPLITS in decode_stream.py)

// The last split of head h to finish merges the head's splits (read through L2) into the output, in one round
// of loads: the splits' maxima and sums (threads < splits * kGroup, one each) together with every output value
// this thread merges (kPer of them, all splits); the weights per q head go through shared memory.
template <int kGroup>
__device__ void merge_splits(const Op& op, int h, float* sm) {
  constexpr int kPer = (kGroup * kHeadDim + kConsumers - 1) / kConsumers;
  const int splits = static_cast<int>(op.splits), n = splits * kGroup, tid = threadIdx.x;
  const float* parts = reinterpret_cast<const float*>(op.partial) + static_cast<int64_t>(h) * n * kRow;
  float* out = reinterpret_cast<float*>(op.output) + static_cast<int64_t>(h) * kGroup * kHeadDim;
  float *mx = sm, *sum = sm + kMaxSplits * kMaxGroup, *weight = sum + kMaxSplits * kMaxGroup;
  float num[kPer][kMaxSplits];
  const bool head_row = tid < n;
  const float m_own = head_row ? __ldcg(parts + tid * kRow) : 0.f;
  const float l_own = head_row ? __ldcg(parts + tid * kRow + 1) : 0.f;
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    const int i = tid + r * kConsumers, j = i / kHeadDim, d = i % kHeadDim;
#pragma unroll
    for (int p = 0; p < kMaxSplits; ++p)
      num[r][p] = i < kGroup * kHeadDim && p < splits ? __ldcg(parts + (p * kGroup + j) * kRow + 2 + d) : 0.f;
  }
  if (head_row) mx[tid] = m_own, sum[tid] = l_own;
  consumers_sync();
  if (tid < kGroup) {
    const int j = tid;
    float top = -INFINITY, den = 0.f;
    for (int p = 0; p < splits; ++p) top = fmaxf(top, mx[p * kGroup + j]);
    for (int p = 0; p < splits; ++p) {
      const float m = mx[p * kGroup + j];
      weight[p * kGroup + j] = m == -INFINITY ? 0.f : __expf(m - top);
      den += sum[p * kGroup + j] * weight[p * kGroup + j];
    }
    for (int p = 0; p < splits; ++p) weight[p * kGroup + j] /= den;
  }
  consumers_sync();
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    const int i = tid + r * kConsumers, j = i / kHeadDim;
    if (i >= kGroup * kHeadDim) break;
    float acc = 0.f;
#pragma unroll
    for (int p = 0; p < kMaxSplits; ++p)
      if (p < splits) acc += num[r][p] * weight[p * kGroup + j];
    __stcg(out + i, acc);
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
  const int d0 = lane * 4;
  const float* qkv = reinterpret_cast<const float*>(op.qkv);
  const float scale = bits_float(op.scale_bits);
  const int half = kHeadDim / 2, mate = d0 < half ? d0 + half : d0 - half;
  const float sign = d0 < half ? -1.f : 1.f;
  const float cs[4] = {kv.cs.x, kv.cs.y, kv.cs.z, kv.cs.w}, sn[4] = {kv.sn.x, kv.sn.y, kv.sn.z, kv.sn.w};
  // every q, k and v value this lane needs, loaded in one round: its 4 dimensions and their rotary mates
  float4 qa[kGroup], qb[kGroup];
#pragma unroll
  for (int j = 0; j < kGroup; ++j) {
    const float* qh = qkv + static_cast<int64_t>(h * group + j) * kHeadDim;
    qa[j] = __ldcg(reinterpret_cast<const float4*>(qh + d0));
    qb[j] = __ldcg(reinterpret_cast<const float4*>(qh + mate));
  }
  const float* kh = qkv + static_cast<int64_t>(hq + h) * kHeadDim;
  const float* vh = qkv + static_cast<int64_t>(hq + hkv + h) * kHeadDim;
  const float4 ka = __ldcg(reinterpret_cast<const float4*>(kh + d0));
  const float4 kb = __ldcg(reinterpret_cast<const float4*>(kh + mate));
  const float4 va = __ldcg(reinterpret_cast<const float4*>(vh + d0));
  float q[kGroup][4], m[kGroup], l[kGroup], acc[kGroup][4];
#pragma unroll
  for (int j = 0; j < kGroup; ++j) {
    m[j] = -INFINITY;
    l[j] = 0.f;
    const float a[4] = {qa[j].x, qa[j].y, qa[j].z, qa[j].w}, b[4] = {qb[j].x, qb[j].y, qb[j].z, qb[j].w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      acc[j][e] = 0.f;
      q[j][e] = (a[e] * cs[e] + sign * b[e] * sn[e]) * scale;
    }
  }
  float kn[4], vn[4];  // the new token's k (rotated) and v, rounded as the cache stores them
  {
    const float a[4] = {ka.x, ka.y, ka.z, ka.w}, b[4] = {kb.x, kb.y, kb.z, kb.w}, v[4] = {va.x, va.y, va.z, va.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      kn[e] = __bfloat162float(__float2bfloat16(a[e] * cs[e] + sign * b[e] * sn[e]));
      vn[e] = __bfloat162float(__float2bfloat16(v[e]));
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
  if (*flag) merge_splits<kGroup>(op, h, sm);
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
