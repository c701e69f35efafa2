"""Causal attention of one request's decompressed heads through torch's `scaled_dot_product_attention`.

Two cases, two kernel choices:
- a prompt without a prefix (`fresh_causal`) runs on cuDNN's attention where torch has it, which builds a plan
  for every sequence length it meets. Queries, keys and values are padded to one of a few lengths
  (`bucketed_length`), so a served mix of prompt lengths meets a handful of shapes, each planned once at start-up
  (`bucket_lengths`); the padding is exact under the causal mask: a padded key sits after every real query, and
  padded queries' rows are dropped.
- a chunk after a prefix (`offset_causal`) needs a lower-right causal mask, which flash attention takes without
  a per-shape plan; its values are padded to the key width, as flash requires.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from tierlm.kernels.launch import cdiv, next_power_of_2

# Without a prefix: cuDNN first (plans per shape, hence the buckets), then what needs no plan.
PLANNED = (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)
UNPLANNED = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)
MIN_STEP = 256  # the finest bucket step (tokens)
STEPS_PER_OCTAVE = 16  # above MIN_STEP * 16 tokens a step is 1/16 of the next power of two: under n/8 padded


def bucketed_length(n: int) -> int:
    """The padded length a fresh prompt of `n >= 1` tokens runs at: a multiple of `MIN_STEP`, or of a sixteenth
    of the power of two at or above `n`, whichever is larger."""
    step = max(MIN_STEP, next_power_of_2(n) // STEPS_PER_OCTAVE)
    return cdiv(n, step) * step


def bucket_lengths(lo: int, hi: int) -> list[int]:
    """Every padded length that prompts of `lo ..= hi` tokens run at, ascending (empty when `lo > hi`)."""
    lengths: list[int] = []
    n = lo
    while 1 <= n <= hi:
        lengths.append(bucketed_length(n))
        n = lengths[-1] + 1
    return lengths


def _pad_rows(t: torch.Tensor, rows: int, width: int) -> torch.Tensor:
    """`t` `[n, H, D]` copied into a contiguous zero-padded `[rows, H, width]`, so every call of a bucket has the same
    layout (cuDNN's plans are per layout too). Only the padding is zeroed: `F.pad` would fill the whole tensor and
    then copy `t` over it, writing it twice."""
    n, d = t.shape[0], t.shape[2]
    out = t.new_empty(rows, t.shape[1], width)
    out[:n, :, :d] = t
    out[n:].zero_()
    if width > d:
        out[:n, :, d:].zero_()
    return out


def _values_width(q: torch.Tensor, v: torch.Tensor) -> int:
    """cuDNN (CUDA) takes values narrower than keys; flash, which takes its place elsewhere, does not."""
    return v.shape[2] if q.device.type == "cuda" and torch.backends.cuda.cudnn_sdp_enabled() else q.shape[2]


def fresh_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of a prompt without a prefix: q and k `[n, H, Dk]`, v `[n, H, Dv]` → `[n, H, Dv]`, run at
    `bucketed_length(n)` rows."""
    n, rows = q.shape[0], bucketed_length(q.shape[0])
    qp, kp = _pad_rows(q, rows, q.shape[2]), _pad_rows(k, rows, k.shape[2])
    vp = _pad_rows(v, rows, _values_width(q, v))
    with sdpa_kernel(list(PLANNED), set_priority=True):
        o = F.scaled_dot_product_attention(qp.transpose(0, 1)[None], kp.transpose(0, 1)[None],
                                           vp.transpose(0, 1)[None], is_causal=True, scale=scale)
    return o[0, :, :n, :v.shape[2]].transpose(0, 1)


def offset_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of `n` new tokens after a prefix: q `[n, H, Dk]` at the last `n` of the `S` positions of
    k `[S, H, Dk]` and v `[S, H, Dv]` → `[n, H, Dv]`."""
    n, seq, dv = q.shape[0], k.shape[0], v.shape[2]
    values = F.pad(v, (0, k.shape[2] - dv)) if k.shape[2] > dv else v
    with sdpa_kernel(list(UNPLANNED)):
        o = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                           values.transpose(0, 1)[None], attn_mask=causal_lower_right(n, seq),
                                           scale=scale)
    return o[0, :, :, :dv].transpose(0, 1)


def plan_buckets(lengths: list[int], heads: int, qk_dim: int, v_dim: int, dtype: torch.dtype,
                 device: torch.device, scale: float) -> None:
    """Run `fresh_causal` once at each of `lengths` (bucketed lengths), so the attention library builds its plan
    for each before serving rather than inside a request's first token."""
    for rows in lengths:
        q = torch.zeros(rows, heads, qk_dim, dtype=dtype, device=device)
        fresh_causal(q, q, q[..., :v_dim], scale)
