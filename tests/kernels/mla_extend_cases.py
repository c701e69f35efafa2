"""MLA extend kernel vs a float64 reference: prefixes in scattered pages, several requests per launch, heads
and widths that do not fill a block, an fp8 pool, a query tensor with rows past the requests' tokens.

Cases are `fn(device, dtype)`; `python -m tests.kernels.mla_extend_cases NAME...` prints a JSON result map
(run under TRITON_INTERPRET=1 without a GPU; see tests/kernels/interp.py).
"""
from __future__ import annotations

import json
import sys
from itertools import accumulate

import torch

from tests.kernels.cases import run as _run_cases
from tests.kernels.mla_cases import _paged_table
from tests.kernels.reference import tolerance


def reference_mla_extend(q: torch.Tensor, latent: torch.Tensor, table: torch.Tensor, rows: list[int],
                         prefix: list[int], ext: list[int], lora: int, scale: float) -> torch.Tensor:
    """float64: request b's queries at positions prefix[b] + i see its latents [0, prefix[b] + i]."""
    out, start = [], 0
    for r, p, n in zip(rows, prefix, ext):
        lat = latent.cpu()[table.cpu()[r, :p + n].long()].double()  # [S, width]
        scores = torch.einsum("thd,sd->ths", q[start:start + n].cpu().double(), lat) * scale
        causal = torch.arange(p + n)[None, :] > (p + torch.arange(n))[:, None]  # [t, s]
        probs = scores.masked_fill(causal[:, None, :], float("-inf")).softmax(-1)
        out.append(torch.einsum("ths,sc->thc", probs, lat[:, :lora]))
        start += n
    return torch.cat(out)


def check_mla_extend(device: str, dtype: torch.dtype, *, prefix: tuple[int, ...] = (0, 9, 21, 4),
                     ext: tuple[int, ...] = (13, 1, 6, 30), num_heads: int = 4, lora: int = 32, rope: int = 8,
                     page_size: int = 4, block_t: int = 4, block_h: int = 16, block_n: int = 16, seed: int = 0,
                     kv_dtype: torch.dtype | None = None, spare_rows: int = 0) -> None:
    from tierlm.kernels.mla_extend import MLAExtendConfig, mla_extend

    gen = torch.Generator().manual_seed(seed)
    batch = len(prefix)
    max_len = max(p + n for p, n in zip(prefix, ext)) + 3
    num_pages = 2 * batch * (-(-max_len // page_size)) + 2  # spare pages hold random garbage
    rows = torch.randperm(batch + 3, generator=gen)[:batch].tolist()
    table = _paged_table(rows, batch + 3, max_len, page_size, num_pages, gen)
    latent = torch.randn(num_pages * page_size, lora + rope, generator=gen).to(kv_dtype or dtype)
    tokens = sum(ext)
    q = torch.randn(tokens + spare_rows, num_heads, lora + rope, generator=gen).to(dtype)
    scale = 0.3
    out = torch.full((tokens + spare_rows, num_heads, lora), float("nan"), dtype=dtype, device=device)
    i32 = dict(dtype=torch.int32, device=device)
    mla_extend(q.to(device), latent.to(device), out, table.to(device), torch.tensor(rows, **i32),
               torch.tensor(prefix, **i32), torch.tensor([0, *accumulate(ext)], **i32), list(ext), scale,
               MLAExtendConfig(block_t=block_t, block_h=block_h, block_n=block_n, num_warps=4, num_stages=1))
    ref = reference_mla_extend(q, latent.to(dtype), table, rows, list(prefix), list(ext), lora, scale)
    torch.testing.assert_close(out[:tokens].cpu().double(), ref, **tolerance(dtype))
    assert out[tokens:].isnan().all(), "rows past the requests' tokens were written"


def _ext(**kw):
    return lambda device, dtype: check_mla_extend(device, dtype, **kw)


MLA_EXTEND_CASES = {
    "mla_extend_page4": _ext(),
    "mla_extend_page1_no_prefix": _ext(prefix=(0, 0), ext=(40, 3), page_size=1, seed=1),
    "mla_extend_odd_dims": _ext(num_heads=3, lora=24, rope=6, prefix=(5, 0, 17), ext=(7, 19, 2), seed=2),
    "mla_extend_two_head_blocks": _ext(num_heads=20, block_h=8, block_t=2, prefix=(3, 30), ext=(11, 5), seed=3),
    "mla_extend_long_prefix_short_tiles": _ext(prefix=(61,), ext=(9,), block_n=16, block_t=8, seed=4),
    "mla_extend_spare_rows": _ext(prefix=(2, 6), ext=(5, 4), spare_rows=3, seed=5),
    "mla_extend_fp8_pool": _ext(kv_dtype=torch.float8_e4m3fn, seed=6),
    # widths that fill their blocks (as 512 + 64 do): whole tiles load without masks
    "mla_extend_full_widths": _ext(lora=32, rope=16, num_heads=16, prefix=(37, 0), ext=(21, 18), seed=7),
}


def run(names: list[str], device: str, dtypes: list[torch.dtype]) -> dict[str, str]:
    return _run_cases(names, device, dtypes, cases=MLA_EXTEND_CASES)


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:] or list(MLA_EXTEND_CASES), "cpu", [torch.float32])))
