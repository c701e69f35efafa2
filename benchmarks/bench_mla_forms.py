"""GPU benchmark: latent attention's prefill in the absorbed form the engine runs against the decompressed
("MHA") form, on the same inputs, to decide whether long extends should switch forms.

Absorbed (the engine now): queries absorbed into latent space (`q_nope · W_uk`), `kernels.mla_extend` over the
cached latents (scores over 512 + 64 columns, values 512 wide), then the value up-projection (`W_uv`): per
visible (query, key) pair and head 2 x (576 + 512) FLOPs. Decompressed: every latent of the sequence up-projected
once to per-head keys and values (`kv_b_proj`, S x 512 x H x 256), then ordinary causal attention with 128 + 64
columns of scores and 128 of values by torch's `scaled_dot_product_attention` (whichever backend it picks; values
padded to 192 where a backend needs equal widths): 2 x (192 + 128) FLOPs per pair and head. Each case times
both paths end to end (projections included), checks them against each other and against float32 attention on
the last 32 queries, and prints a table. One request per case (its prefix and new tokens).

Usage: `PYTHONPATH=. python benchmarks/bench_mla_forms.py` from the repo root; needs CUDA.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention.bias import causal_lower_right

from benchmarks.timing import median_seconds
from tierlm.kernels.mla_extend import MLAExtendConfig, mla_extend

NOPE, ROPE, LORA, VDIM = 128, 64, 512, 128  # DeepSeek-V2/V3 head dims
SCALE = (NOPE + ROPE) ** -0.5
DTYPE = torch.bfloat16
# (label, heads, prefix, new tokens)
CASES = [("V2-Lite 1K", 16, 0, 1024), ("V2-Lite 4K", 16, 0, 4096), ("V2-Lite 8K", 16, 0, 8192),
         ("V2-Lite 2K on 2K", 16, 2048, 2048), ("V2-Lite 256 on 8K", 16, 8192, 256),
         ("V3 4K", 128, 0, 4096), ("V3 1K on 1K", 128, 1024, 1024)]


class Case:
    """One request: `prefix` cached latents plus `new` tokens' (stored), their queries, a layer's up-projection."""

    def __init__(self, heads: int, prefix: int, new: int, gen: torch.Generator) -> None:
        self.heads, self.prefix, self.new = heads, prefix, new
        seq = prefix + new
        dev = dict(device="cuda", dtype=DTYPE)
        self.latent = torch.randn(seq, LORA + ROPE, generator=gen).to(**dev)
        self.q_nope = torch.randn(new, heads, NOPE, generator=gen).to(**dev)
        self.q_pe = torch.randn(new, heads, ROPE, generator=gen).to(**dev)
        self.w_kv = (torch.randn(heads * (NOPE + VDIM), LORA, generator=gen) * LORA ** -0.5).to(**dev)
        self.table = torch.arange(seq, dtype=torch.int32, device="cuda")[None]
        i32 = dict(dtype=torch.int32, device="cuda")
        self.rows, self.prefix_t = torch.zeros(1, **i32), torch.tensor([prefix], **i32)
        self.indptr = torch.tensor([0, new], **i32)
        self.pairs = new * prefix + new * (new + 1) // 2

    def _w(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.w_kv.view(self.heads, NOPE + VDIM, LORA)
        return w[:, :NOPE], w[:, NOPE:]  # W_uk [H, nope, lora], W_uv [H, v, lora]

    def absorbed(self) -> torch.Tensor:
        """`[new, H, v]` by the engine's path."""
        w_uk, w_uv = self._w()
        q = torch.cat((torch.einsum("thn,hnc->thc", self.q_nope, w_uk), self.q_pe), dim=-1)
        out = torch.empty(self.new, self.heads, LORA, dtype=DTYPE, device="cuda")
        mla_extend(q, self.latent, out, self.table, self.rows, self.prefix_t, self.indptr, [self.new], SCALE,
                   MLAExtendConfig())
        return torch.einsum("thc,hvc->thv", out, w_uv)

    def decompressed(self, pad_v: bool) -> torch.Tensor:
        """`[new, H, v]` by up-projecting every latent, then SDPA (values padded to 192 with `pad_v`)."""
        seq, heads = self.prefix + self.new, self.heads
        kv = F.linear(self.latent[:, :LORA], self.w_kv).view(seq, heads, NOPE + VDIM)
        k = torch.cat((kv[..., :NOPE], self.latent[:, None, LORA:].expand(seq, heads, ROPE)), dim=-1)
        v = kv[..., NOPE:]
        if pad_v:
            v = F.pad(v, (0, NOPE + ROPE - VDIM))
        q = torch.cat((self.q_nope, self.q_pe), dim=-1)
        mask = causal_lower_right(self.new, seq) if self.prefix else None
        out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                             v.transpose(0, 1)[None], attn_mask=mask, is_causal=not self.prefix,
                                             scale=SCALE)
        return out[0].transpose(0, 1)[..., :VDIM]

    def reference(self, last: int = 32) -> torch.Tensor:
        """float32 attention of the last `last` queries (or all, if fewer), `[last, H, v]`."""
        last = min(last, self.new)
        w_uk, w_uv = (w.float() for w in self._w())
        lat = self.latent.float()
        k = torch.einsum("sc,hnc->shn", lat[:, :LORA], w_uk)
        v = torch.einsum("sc,hvc->shv", lat[:, :LORA], w_uv)
        q_n, q_r = self.q_nope[-last:].float(), self.q_pe[-last:].float()
        scores = (torch.einsum("thn,shn->ths", q_n, k) + torch.einsum("thr,sr->ths", q_r, lat[:, LORA:])) * SCALE
        seq = self.prefix + self.new
        pos = torch.arange(seq - last, seq, device="cuda")
        scores = scores.masked_fill(torch.arange(seq, device="cuda")[None, None, :] > pos[:, None, None],
                                    float("-inf"))
        return torch.einsum("ths,shv->thv", scores.softmax(-1), v)


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    rows = []
    for name, heads, prefix, new in CASES:
        case = Case(heads, prefix, new, gen)
        ref = case.reference()
        cells = {}
        paths = {"absorbed": case.absorbed, "sdpa": lambda: case.decompressed(False),
                 "sdpa padded v": lambda: case.decompressed(True)}
        for label, fn in paths.items():
            try:
                err = (fn()[-32:].float() - ref).abs().max().item()
                cells[label] = (median_seconds(fn, iters=10) * 1e3, err)
            except Exception as exc:  # noqa: BLE001 - a backend may refuse a shape; report and go on
                cells[label] = (float("nan"), float("nan"))
                print(f"{name} {label}: {type(exc).__name__}: {str(exc)[:100]}")
        rows.append((name, case.pairs * heads, cells))
        print(name, {k: f"{ms:.3f} ms err {e:.1e}" for k, (ms, e) in cells.items()}, flush=True)
        del case
        torch.cuda.empty_cache()
    print("\n## ms per layer (max |err| vs float32); TFLOP/s by each form's own count of attention FLOPs")
    print(f"{'case':20s} {'absorbed':>22} {'sdpa':>22} {'sdpa padded v':>22} {'best mha / absorbed':>20}")
    for name, pair_heads, cells in rows:
        out = []
        for label, flops in (("absorbed", 2 * (LORA + ROPE + LORA)), ("sdpa", 2 * (NOPE + ROPE + VDIM)),
                             ("sdpa padded v", 2 * (NOPE + ROPE + VDIM))):
            ms, err = cells[label]
            out.append(f"{ms:8.3f} {pair_heads * flops / ms / 1e9:6.0f} {err:6.0e}")
        mha = min((ms for ms in (cells["sdpa"][0], cells["sdpa padded v"][0]) if ms == ms), default=float("nan"))
        print(f"{name:20s} {out[0]:>22} {out[1]:>22} {out[2]:>22} {cells['absorbed'][0] / mha:19.2f}x")


if __name__ == "__main__":
    main()
