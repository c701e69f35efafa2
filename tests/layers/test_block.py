"""`PreNormBlock` with the small-batch kernel's fusions (norm into the first projection, SiLU·mul into the
down projection) gives what the unfused layers give (CUDA: the kernel runs only there)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tierlm.layers.block import PreNormBlock
from tierlm.layers.mlp import GatedMLP
from tierlm.layers.norm import RMSNorm
from tierlm.parallel.linear import ColumnParallelLinear, NormedInput


class _Attn(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.qkv_proj = ColumnParallelLinear(hidden, 3 * hidden, bias=True)
        self.hidden = hidden

    def forward(self, x, batch, rotary, attn):
        return self.qkv_proj(x)[..., :self.hidden] * 0.5


class _Block(PreNormBlock):
    def __init__(self, hidden: int = 256, inter: int = 384) -> None:
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(hidden), RMSNorm(hidden)
        self.self_attn, self.mlp = _Attn(hidden), GatedMLP(hidden, inter)


def test_the_block_and_its_mlp_declare_what_their_linears_read():
    from tierlm.parallel.linear import declared_prologues

    block = _Block()
    block.o_proj = nn.Linear(4, 4)  # a layer nobody feeds through a prologue
    got = declared_prologues(block)
    assert got == {id(block.self_attn.qkv_proj): ("plain", "rmsnorm"), id(block.mlp.gate_up_proj): ("plain", "rmsnorm"),
                   id(block.mlp.down_proj): ("plain", "silu_mul")}
    block.post_attention_layernorm = nn.LayerNorm(256)  # not an RMSNorm: its reader gets no fused prologue
    assert id(block.mlp.gate_up_proj) not in declared_prologues(block)


def test_without_plans_nothing_is_deferred():
    block = _Block()
    seen = []
    block.self_attn.qkv_proj.register_forward_pre_hook(lambda m, a: seen.append(type(a[0])))
    block(torch.randn(2, 256), torch.randn(2, 256), None, None, None)
    assert seen == [torch.Tensor]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the small-batch kernel runs on CUDA only")
def test_fused_block_matches_the_unfused_one():
    pytest.importorskip("triton")
    from tierlm.kernels.gemv import GemvConfig

    torch.manual_seed(0)
    block = _Block().cuda().to(torch.bfloat16)
    with torch.no_grad():
        for norm in (block.input_layernorm, block.post_attention_layernorm):
            norm.weight.uniform_(0.5, 1.5)
    plan = {p: {b: GemvConfig(4, 128, 4) for b in (1, 2, 4)} for p in ("plain", "rmsnorm", "silu_mul")}
    for rows in (1, 3, 4):
        x = torch.randn(rows, 256, device="cuda", dtype=torch.bfloat16)
        for res in (None, torch.randn_like(x)):
            with torch.no_grad():
                ref_out, ref_res = block(x, res, None, None, None)
                linears = [m for m in block.modules() if hasattr(m, "gemv_plan")]
                for m in linears:
                    m.gemv_plan = plan
                seen = []
                hook = block.self_attn.qkv_proj.register_forward_pre_hook(lambda m, a: seen.append(type(a[0])))
                out, new_res = block(x, res, None, None, None)
                hook.remove()
                for m in linears:
                    m.gemv_plan = None
            assert seen == [NormedInput]
            assert (new_res.float() - ref_res.float()).abs().max() <= 0.03 * ref_res.float().abs().max()
            assert (out.float() - ref_out.float()).abs().max() <= 0.03 * ref_out.float().abs().max()
