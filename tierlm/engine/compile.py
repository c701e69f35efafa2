"""`--compile`: the model's forward as one graph compiled ahead of time by torch.compile (Inductor).

What is compiled: the whole forward of a model whose forward never syncs with the host (`cuda_graph_safe`),
traced by Dynamo in one piece (`fullgraph`) with the token dimension dynamic. Attention is the one opaque
call in the graph: the custom op `tierlm::attention`, which runs the live backend on the live batch of the
pass (both reach it through `_FORWARD`, set around each call), so the graph holds no batch metadata and one
graph serves prefill and every decode batch size. The Triton kernels the model calls directly (fused RMSNorm,
SiLU·mul, q/k norm + rope) are traced as user-defined Triton kernels; the backend's kernels run inside the op.
CUDA graphs capture the compiled decode exactly as they capture the eager one.

Which torch facility, and why: torch's AOT compile (`torch.compile(...).aot_compile`, saved with
`save_compiled_function`, loaded with `torch.compiler.load_compiled_function`; torch >= 2.10). The saved
function holds Dynamo's output (bytecode) and the Inductor output code, so a start that finds it runs no
Dynamo tracing and no Inductor compilation; the kernels that output code loads come from Inductor's and
Triton's caches, which the AOT tree nests (`AotBundle.activate`). The Inductor caches alone (or torch's
mega-cache, `save_cache_artifacts`, which fills the same caches) would still re-trace with Dynamo on
every start.

Guards: none are kept (`skip_all_guards_unsafe`). The tree's key pins everything they would check (model
config, dtype, device, versions, the traced code), and a guard recorded while compiling would compare
dispatch keys taken outside inference mode with those of the engine's inference-mode calls.
"""
from __future__ import annotations

import contextvars
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from tierlm.attention.base import AttentionBackend, ForwardBatch

logger = logging.getLogger(__name__)

# Compile options: part of the AOT tree's key (a change here must change the compiled code's key).
OPTIONS = {"backend": "inductor", "mode": "default", "fullgraph": True, "dynamic": "tokens", "guards": "none",
           "format": 1}
EXAMPLE_TOKENS = 8  # size of the example inputs; any size >= 2 traces the same dynamic graph

# The backend and batch of the forward pass in flight, for the attention op inside the compiled graph.
# A context variable rather than an argument: the graph must not hold (or guard on) either of them.
_FORWARD: contextvars.ContextVar = contextvars.ContextVar("tierlm_forward")


@torch.library.custom_op("tierlm::attention", mutates_args=())
def attention_op(q: torch.Tensor, k: torch.Tensor, v: Optional[torch.Tensor], layer: int,
                 width: int) -> torch.Tensor:
    """Attention of one layer by the backend of the pass in flight (it also stores the layer's new KV in the
    pool, which no other op of the graph reads or writes, so the graph's data order is the only order)."""
    attn, batch = _FORWARD.get()
    return attn.forward(q, k, v, layer, batch)


@attention_op.register_fake
def _attention_fake(q, k, v, layer, width):
    return q.new_empty(q.shape[0], width)


class _GraphAttention:
    """What the model sees as its attention backend inside the graph: every call becomes the op."""

    def __init__(self, width: int) -> None:
        self.width = width  # output features per token: heads x value head size

    def fuses_rope(self, batch) -> bool:
        return False  # the compiled graph keeps the model's own rotary; the op takes rotated q and k

    def forward(self, q, k, v, layer, batch):
        return torch.ops.tierlm.attention(q, k, v, layer, self.width)


@dataclass
class _Tokens:
    """The part of a `ForwardBatch` a model reads outside attention (models read nothing else of it)."""

    input_ids: torch.Tensor
    positions: torch.Tensor


class _Traced(nn.Module):
    """The traced function: model forward from token ids and positions to final hidden states."""

    def __init__(self, model: nn.Module, width: int) -> None:
        super().__init__()
        self.model = model
        self.attention = _GraphAttention(width)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(_Tokens(input_ids, positions), self.attention)


def attention_width(model: nn.Module) -> int:
    """Features per token of the model's attention output (what the op returns)."""
    if hasattr(model, "attention_params"):  # latent attention: the model says how its backend is built
        p = model.attention_params()
        return p["num_heads"] * p.get("value_dim", p["head_dim"])
    cfg = model.config
    return cfg.num_heads * cfg.head_dim


def check_compilable(model: nn.Module) -> None:
    """ValueError naming --compile when the model's forward cannot be one graph (or torch lacks AOT compile)."""
    if not getattr(model, "cuda_graph_safe", False):
        raise ValueError(f"--compile: {type(model).__name__}'s forward syncs with the host (e.g. its MoE "
                         "routing), so it cannot be compiled as one graph; leave --compile off")
    if not hasattr(torch._dynamo.config, "enable_aot_compile"):
        raise ValueError(f"--compile needs torch >= 2.10 (ahead-of-time torch.compile); this is torch "
                         f"{torch.__version__}")


class CompiledForward:
    """The model's forward compiled ahead of time; called like the model, `(batch, attn) -> hidden`.

    Loads the saved function at `artifact` when there is one (no Dynamo, no Inductor), else compiles and
    saves it there (`artifact=None`: compile for this process only). `built` says which happened.
    """

    def __init__(self, model: nn.Module, device: torch.device, artifact: Optional[Path]) -> None:
        check_compilable(model)
        self.model = model
        self.traced = _Traced(model, attention_width(model))
        self.built = False
        t0 = time.perf_counter()
        fn = self._load(artifact) if artifact is not None else None
        if fn is None:
            fn = self._build(device, artifact)
            self.built = True
        fn.disable_guard_check()
        self._fn = fn
        logger.info("--compile: %s the model's forward in %.1f s%s", "compiled" if self.built else "loaded",
                    time.perf_counter() - t0, f" ({artifact})" if artifact is not None else "")

    @staticmethod
    def _load(artifact: Path) -> Any:
        if not artifact.is_file():
            return None
        try:
            with open(artifact, "rb") as f:
                return torch.compiler.load_compiled_function(f)
        except Exception as e:  # noqa: BLE001 (any failure to load means: compile again)
            logger.warning("--compile: cannot load %s (%s: %s); compiling again", artifact, type(e).__name__, e)
            return None

    def _build(self, device: torch.device, artifact: Optional[Path]) -> Any:
        ids = torch.zeros(EXAMPLE_TOKENS, dtype=torch.long, device=device)
        pos = torch.arange(EXAMPLE_TOKENS, device=device)
        for t in (ids, pos):
            torch._dynamo.mark_dynamic(t, 0)
        with torch._dynamo.config.patch(enable_aot_compile=True):
            compiled = torch.compile(self.traced.forward, fullgraph=True,
                                     options={"guard_filter_fn": torch.compiler.skip_all_guards_unsafe})
        with torch.inference_mode():
            fn = compiled.aot_compile(((ids, pos), {}))
        if artifact is not None:
            artifact.parent.mkdir(parents=True, exist_ok=True)
            fn.save_compiled_function(str(artifact))
        return fn

    def __call__(self, batch: ForwardBatch, attn: AttentionBackend) -> torch.Tensor:
        token = _FORWARD.set((attn, batch))
        try:
            return self._fn(self.traced, batch.input_ids, batch.positions)
        finally:
            _FORWARD.reset(token)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.compute_logits(hidden)
