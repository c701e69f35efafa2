"""Fused MoE kernel cases against the torch reference path (`experts_sorted`), runnable in-process on a GPU
or in a subprocess under Triton's interpreter: `python -m tests.kernels.moe_cases NAME...` (see cases.py)."""
from __future__ import annotations

import json
import sys

import torch

from tests.kernels.cases import CaseFn, run
from tests.kernels.reference import tolerance


def grouped_sigmoid_route(logits: torch.Tensor, top_k: int, groups: int, seed: int):
    """DeepSeek-V3's routing (`tierlm.models.deepseek_moe.Router`): float32 weights whatever the input dtype."""
    from types import SimpleNamespace

    from tierlm.models.deepseek_moe import Router

    experts = logits.shape[1]
    cfg = SimpleNamespace(n_routed_experts=experts, scoring="sigmoid", n_group=groups, topk_group=groups // 2,
                          num_experts_per_tok=top_k, norm_topk_prob=True, routed_scaling_factor=2.5)
    router = Router(cfg, experts).to(logits.device)  # identity projection: the logits are the input
    with torch.no_grad():
        router.weight.copy_(torch.eye(experts))
        router.e_score_correction_bias.copy_(torch.randn(experts, generator=torch.Generator().manual_seed(seed)))
        return router(logits)


def check_fused_moe(device: str, dtype: torch.dtype, *, tokens: int, experts: int = 4, hidden: int = 32,
                    inter: int = 16, top_k: int = 2, block_m: int = 16, block_n: int = 16, block_k: int = 16,
                    group_m: int = 2, seed: int = 0, groups: int = 0, with_add: bool = False) -> None:
    from tierlm.kernels.fused_moe import MoEConfig, fused_moe
    from tierlm.layers.moe import experts_sorted, route

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, hidden, generator=gen)
    gate_up = torch.randn(experts, 2 * inter, hidden, generator=gen) * hidden ** -0.5
    down = torch.randn(experts, hidden, inter, generator=gen) * inter ** -0.5
    logits = torch.randn(tokens, experts, generator=gen)
    x, gate_up, down, logits = (t.to(device=device, dtype=dtype) for t in (x, gate_up, down, logits))
    if groups:  # DeepSeek's grouped routing
        weights, ids = grouped_sigmoid_route(logits, top_k, groups, seed)
        assert weights.dtype == torch.float32
    else:
        weights, ids = route(logits, top_k, renormalize=True)
    cfg = MoEConfig(block_m=block_m, block_n=block_n, block_k=block_k, group_m=group_m, num_warps=4, num_stages=1)
    add = torch.randn(tokens, hidden, generator=gen).to(device=device, dtype=dtype) if with_add else None
    out = fused_moe(x, gate_up, down, weights, ids, cfg, add=add)
    ref = experts_sorted(x.double(), gate_up.double(), down.double(), weights.double(), ids)
    if add is not None:  # the shared experts' term
        ref = ref + add.double()
    assert out.shape == x.shape and out.dtype == dtype
    torch.testing.assert_close(out.cpu().double(), ref.cpu(), **tolerance(dtype))


def _cases() -> dict[str, CaseFn]:
    def moe(**kw) -> CaseFn:
        return lambda device, dtype: check_fused_moe(device, dtype, **kw)

    return {
        "moe_one_token": moe(tokens=1),
        "moe_3_tokens_padded": moe(tokens=3, seed=1),  # 6 pairs over 4 experts: every segment padded
        "moe_40_tokens_multi_block": moe(tokens=40, seed=2),  # 80 pairs: experts span several row blocks
        "moe_top1_uneven_tiles": moe(tokens=9, top_k=1, hidden=40, inter=24, seed=3),  # masked K and N tails
        "moe_block_m32": moe(tokens=17, block_m=32, block_n=32, group_m=1, seed=4),
        # DeepSeek-V3 routing: 16 experts in 4 groups (2 kept), top-4, float32 weights beside dtype activations
        "moe_deepseek_grouped_f32_weights": moe(tokens=11, experts=16, top_k=4, groups=4, seed=5),
        # one program per (pair, column block), `moe_pairs`: no sorting, no padding rows
        "moe_pairs_one_token": moe(tokens=1, block_m=1, seed=6),
        "moe_pairs_uneven_tiles": moe(tokens=5, top_k=3, hidden=40, inter=24, block_m=1, seed=7),  # K and N tails
        "moe_pairs_deepseek_grouped_f32_weights": moe(tokens=3, experts=16, top_k=4, groups=4, block_m=1, seed=8),
        # a second term added to the mix in the same last launch (DeepSeek's shared experts)
        "moe_with_add": moe(tokens=6, with_add=True, seed=9),
        "moe_pairs_with_add": moe(tokens=2, block_m=1, with_add=True, seed=10),
    }


MOE_CASES: dict[str, CaseFn] = _cases()

if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:] or list(MOE_CASES), "cpu", [torch.float32], cases=MOE_CASES)))
