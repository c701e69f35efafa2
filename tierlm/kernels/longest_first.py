"""The order in which decode attention's stage 1 may take a batch's requests: longest first, so the last
programs to start are short ones (`decode_attention(order=...)`). Device work only, so it can be captured in a
CUDA graph with the step."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from tierlm.kernels.launch import cdiv
from tierlm.utils.triton_mode import interpreted


@triton.jit
def _longest_first_kernel(seq_lens, order, n, BLOCK: tl.constexpr):
    # rank of i = requests longer than i, plus the equally long ones before it (a stable order); request i goes
    # to position rank(i). Each program ranks BLOCK requests against all n, BLOCK at a time.
    offs_i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask_i = offs_i < n
    len_i = tl.load(seq_lens + offs_i, mask=mask_i, other=0)
    rank = tl.zeros([BLOCK], dtype=tl.int32)
    for j0 in range(0, n, BLOCK):
        offs_j = j0 + tl.arange(0, BLOCK)
        len_j = tl.load(seq_lens + offs_j, mask=offs_j < n, other=-1)
        before = (len_j[None, :] > len_i[:, None]) | ((len_j[None, :] == len_i[:, None])
                                                      & (offs_j[None, :] < offs_i[:, None]))
        rank += tl.sum(before.to(tl.int32), axis=1)
    tl.store(order + rank, offs_i, mask=mask_i)


def longest_first(seq_lens: torch.Tensor) -> torch.Tensor:
    """The batch's indices by decreasing length, equal lengths in batch order (`[B]` int32; device work only, so
    it can be captured in a CUDA graph). On CUDA one small launch, where a general sort takes several."""
    n = seq_lens.shape[0]
    if seq_lens.device.type != "cuda" and not interpreted():
        return torch.argsort(seq_lens, descending=True, stable=True).to(torch.int32)
    order = torch.empty(n, dtype=torch.int32, device=seq_lens.device)
    if n:
        _longest_first_kernel[(cdiv(n, 128),)](seq_lens, order, n, BLOCK=128)
    return order
