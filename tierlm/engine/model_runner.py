"""`ModelRunner`: owns the model weights, the KV pool and the attention backend; runs forward passes."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Optional

import torch

from tierlm.attention.base import AttentionBackend, ForwardBatch
from tierlm.attention.mla_up_proj import LatentForms
from tierlm.attention.registry import auto_backend, backend_class
from tierlm.config import EngineConfig
from tierlm.engine.aot_tree import open_tree
from tierlm.engine.mixed_graph import MixedGraphRunner, mixed_decode_sizes, mixed_graph_on
from tierlm.engine.piecewise_graph import PiecewiseGraphRunner, piecewise_tokens
from tierlm.engine.plan import FROM_TABLE, StepPlan
from tierlm.engine.prompt_logprobs import Scores, score
from tierlm.engine.staging import HostStaging
from tierlm.kernels.step_metadata import expand_launch, expand_tokens
from tierlm.kvcache.pool import KVPool
from tierlm.kvcache.req_table import ReqToTokenTable
from tierlm.models.config import ModelConfig
from tierlm.models.loader import building_in, init_dummy_weights, load_weights
from tierlm.models.registry import model_class
from tierlm.parallel.group import TPGroup
from tierlm.utils.triton_mode import interpreted

logger = logging.getLogger(__name__)
_ALIGN = 4  # int32 elements in 16 bytes
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def resolve_dtype(name: str, model_cfg: ModelConfig, device: torch.device) -> torch.dtype:
    """`--dtype NAME`; "auto": float32 on the CPU, else the model's stated dtype, except that a model stated in
    float32 (or in none we compute in, or in none at all) computes in bfloat16 on a GPU, as vLLM and SGLang serve
    it: half the weight reads and the tensor cores' rate. `--dtype float32` keeps float32."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cpu":
        return torch.float32
    stated = str(model_cfg.torch_dtype).replace("torch.", "")
    if model_cfg.torch_dtype is not None and stated not in DTYPES:
        logger.warning("config.json's torch_dtype %r is none of %s: computing in bfloat16 (--dtype chooses)",
                       model_cfg.torch_dtype, ", ".join(DTYPES))
    if stated == "float32":
        logger.info("config.json states float32: computing in bfloat16 on %s (--dtype float32 keeps float32)",
                    device.type)
        return torch.bfloat16
    return DTYPES.get(stated, torch.bfloat16)


KV_DTYPES = {"fp8": torch.float8_e4m3fn, "fp8_e4m3": torch.float8_e4m3fn}


def resolve_kv_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """The KV cache's element type for `--kv-cache-dtype NAME` on a model computing in `dtype`."""
    return dtype if name == "auto" else KV_DTYPES[name]


class ModelRunner:
    """Loads the model (this rank's shard under tensor parallelism), sizes and allocates the device KV pool,
    and turns scheduled requests into logits."""

    def __init__(self, config: EngineConfig, model_dir: Path, model_cfg: ModelConfig, max_model_len: int,
                 tp: TPGroup = TPGroup(), device: Optional[torch.device] = None) -> None:
        self.config = config
        self.model_cfg = model_cfg
        self.tp = tp
        self.device = device or resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, model_cfg, self.device)
        self.max_model_len = max_model_len
        torch.manual_seed(config.seed)
        max_positions = max(max_model_len, model_cfg.max_position_embeddings)
        # before anything compiles (MoE tuning, Triton kernels, --compile): their output goes into the tree
        self.aot = open_tree(config, model_cfg, self.device, self.dtype, max_positions)
        cls = model_class(model_cfg.architecture)
        self.kv_dtype = resolve_kv_dtype(config.kv_cache_dtype, self.dtype)
        sharding = {}
        if tp.size > 1:
            if not getattr(cls, "tensor_parallel", False):
                raise ValueError(f"--tp-size {tp.size}: {model_cfg.architecture} cannot be served tensor parallel "
                                 "yet (Llama, Mistral, Qwen2 and Qwen3 can)")
            sharding = {"tp": tp}
        self.num_heads = tp.split(model_cfg.num_heads, "the number of attention heads")
        self.num_kv_heads = tp.kv_heads(model_cfg.num_kv_heads)[0]
        with building_in(self.device, self.dtype):
            model = cls(model_cfg, max_positions=max_positions, **sharding)
        model.to(self.dtype)  # the rest; modules whose tables stay float32 override `_apply`
        model.rotary.to(self.device)
        if config.load_format == "dummy":
            init_dummy_weights(model, config.seed)
        else:
            load_weights(model, model_dir)
        self.model = model.eval()
        if self.device.type == "cuda":  # before the KV pool takes the free memory: tuning allocates
            from tierlm.layers.moe import tune_fused_moe
            from tierlm.parallel.linear import tune_small_batch_linears
            tuned = tune_fused_moe(self.model)
            if (config.small_batch_gemv or config.small_batch_gemm) and not config.compile:
                tuned += tune_small_batch_linears(self.model, config.small_batch_gemv, config.small_batch_gemm)
            if tuned:
                torch.cuda.empty_cache()
        self.forward_model = self.model  # what runs the forward: the model, or its compiled graph
        if config.compile:
            from tierlm.engine.compile import CompiledForward
            self.forward_model = CompiledForward(self.model, self.device,
                                                 self.aot.forward_artifact if self.aot is not None else None)
        self.staging = HostStaging(self.device)
        self._expand_launch = expand_launch(self.device)  # a pass's token inputs, launched every uncaptured pass
        # `_counting`'s buffer, made before any graph is captured (a decode pass has at most this many requests)
        self._counts = torch.arange(config.max_running_requests + 1, dtype=torch.int32, device=self.device)
        self.layout = cls.kv_layout(model_cfg, self.kv_dtype, **sharding)
        self.num_pages = self._num_kv_pages()
        if tp.size > 1:  # every rank holds the same page ids: the smallest budget decides
            pages = torch.tensor([self.num_pages], device=self.device)
            if tp.group is not None:
                import torch.distributed as dist
                dist.all_reduce(pages, op=dist.ReduceOp.MIN, group=tp.group)
            self.num_pages = int(pages.item())
        self.pool = KVPool(self.layout, self.num_pages, config.page_size, self.device)
        logger.info("KV pool: %d pages x %d tokens = %d tokens (%.2f GiB)", self.num_pages - 1, config.page_size,
                    (self.num_pages - 1) * config.page_size, self.pool.nbytes / 2**30)

    def _num_kv_pages(self) -> int:
        cfg = self.config
        per_page = self.layout.page_bytes(cfg.page_size)
        if cfg.kv_cache_gb is not None:
            budget = cfg.kv_cache_gb * 2**30
        elif self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            reserve_activations = 2 * 2**30
            budget = free - (1 - cfg.gpu_memory_utilization) * total - reserve_activations
        else:
            budget = 2**30
        pages = int(budget // per_page) + 1  # +1 scratch page
        if pages < 2:
            raise ValueError(f"--kv-cache-gb: the KV budget ({budget / 2**30:.3f} GiB) holds no page of "
                             f"{per_page} bytes; raise it")
        return pages

    def make_attention(self, req_to_token: torch.Tensor, token_ids: torch.Tensor) -> AttentionBackend:
        """Create the attention backend (and decode CUDA graphs when enabled and supported)."""
        name, mc = self.config.attention_backend, self.model_cfg
        kind = getattr(self.model, "attention_kind", "gqa")  # "mla": one latent per token
        if name == "auto":
            name = auto_backend(self.device.type)
        cls = backend_class(name, kind)
        if name == "triton" and self.device.type != "cuda" and not interpreted():
            raise ValueError("--attention-backend triton needs a CUDA device (or TRITON_INTERPRET=1)")
        args = (self.pool, req_to_token, self.num_heads, mc.head_dim, mc.head_dim ** -0.5)
        if kind != "gqa":  # the model says how its backend is built (heads, widths, softmax scale)
            params = self.model.attention_params()
            if "up_proj" in params:  # latent attention: which form its extends take
                params["forms"] = LatentForms.named(self.config.mla_extend_form)
            self.attn = cls(self.pool, req_to_token, **params)
        elif name == "triton":
            from tierlm.attention.triton_backend import TritonAttentionConfig
            tcfg = TritonAttentionConfig.for_device(self.device)
            if self.device.type == "cuda":
                from tierlm.attention.triton_autotune import tuned_config
                tcfg = tuned_config(tcfg, self.num_heads, self.num_kv_heads, mc.head_dim, self.dtype, self.device,
                                    self.kv_dtype, self.pool.page_size)
            self.attn = cls(*args, config=tcfg)
        else:
            self.attn = cls(*args)
        self.attn.warm_up(self.config.max_prefill_tokens, self.dtype)
        self.graphs = None
        # graphs need both a backend with capture hooks and a model whose forward never syncs with the host
        capturable = self.attn.supports_cuda_graph() and getattr(self.model, "cuda_graph_safe", False)
        if self.config.cuda_graph and self.device.type == "cuda" and capturable:
            from tierlm.engine.cuda_graph import DecodeGraphRunner
            self.graphs = DecodeGraphRunner(self.forward_model, self.attn, req_to_token, token_ids,
                                            min(self.config.max_running_requests, 256))
        self.pieces = None
        tokens = piecewise_tokens(self.config)
        if tokens and self.graphs is not None and getattr(self.model, "piecewise_graph_safe", False):
            self.pieces = PiecewiseGraphRunner(self.model, self.device, tokens)
        self.mixed = None
        whole = (self.graphs is not None and self.attn.supports_mixed_graph()
                 and getattr(self.model, "piecewise_graph_safe", False))
        decode_sizes = mixed_decode_sizes(self.graphs.sizes[-1]) if whole and mixed_graph_on(self.config) else []
        # prefill passes captured whole for the pieces' own ladder: padded no more than the pieces would pad them
        prefill = self.pieces.sizes if whole and self.pieces is not None and self.config.prefill_cuda_graph else []
        if decode_sizes or prefill:
            self.mixed = MixedGraphRunner(self.model, self.attn, req_to_token, self.config.max_mixed_tokens,
                                          decode_sizes, prefill_tokens=prefill)
        return self.attn

    def build_batch(self, plan: StepPlan, tables: ReqToTokenTable) -> tuple[ForwardBatch, "SampleSites"]:
        """Metadata of one pass, uploaded in one packed copy; also writes the plan's new request→token table
        entries on the device.

        Decode inputs are read on the device from the token table (where the sampler wrote them), so a decode
        step can be built before the host has seen the previous step's tokens; so are the inputs marked
        FROM_TABLE in a prefill plan (the decode requests of a mixed step).
        """
        rows, prefix, extend_lens = plan.rows, plan.prefix_lens, plan.extend_lens
        B, M = len(rows), len(plan.table_slots)
        decode = plan.mode == "decode"
        if decode:  # a token per request, each sampled: rows, positions and sites are the requests' own
            seqs = [p + 1 for p in prefix]
            segments = (rows, prefix, seqs, plan.table_rows, plan.table_positions, plan.table_slots)
        else:  # per request only: the tokens' rows, positions and slots are expanded on the device
            seqs = [p + n for p, n in zip(prefix, extend_lens)]
            segments = (rows, prefix, seqs, plan.table_rows, plan.table_positions, plan.table_slots,
                        [0, *accumulate(extend_lens)], plan.sample_rows, plan.sample_positions, plan.sample_index,
                        plan.input_ids)
        # every segment starts 16 bytes in: Triton specializes pointer arguments on 16-byte alignment, so a
        # segment at a varying offset would compile each kernel again, on the step's thread, per alignment
        values: list[int] = []
        for seg in segments:
            values += seg
            values += [0] * (-len(seg) % _ALIGN)
        packed = self.staging.upload(values)
        o = 0

        def take(n: int) -> torch.Tensor:
            nonlocal o
            start, o = o, o + n + (-n % _ALIGN)
            return packed[start:start + n]

        req_rows, prefix_t, seq_t = take(B), take(B), take(B)
        m_rows, m_pos, m_slots = take(M), take(M), take(M)
        if decode:
            T = S = B
            counts = self._counting(B + 1)
            qo, ids = counts, None
            sites = SampleSites(req_rows, seq_t, counts[:B], B)
        else:
            T, S = sum(extend_lens), len(plan.sample_index)
            qo = take(B + 1)
            sites = SampleSites(take(S), take(S), take(S), S)  # int32 as uploaded: their users take it
            ids = take(T)
        variant = 0  # which of the attention backend's decode launches a replayed step takes
        if decode and self.graphs is not None and self.graphs.fits(B):
            # one launch loads the graph's buffers: the new table entries, then the rows, positions and lengths,
            # each row's input and slot read from the tables; the pass needs no other tensor
            variant = self.graphs.variant_for(seqs)
            self.graphs.stage(req_rows, prefix_t, seq_t, (m_rows, m_pos, m_slots), variant)
            pos, input_ids = prefix_t, prefix_t[:0]
            out_loc = input_ids
        else:
            tables.write(m_rows, m_pos, m_slots)  # before the slots are read: a new page's entries
            input_ids, pos, out_loc = expand_tokens(ids, req_rows, prefix_t, qo, tables.table, tables.token_ids,
                                                    FROM_TABLE, launch=self._expand_launch)
        batch = ForwardBatch(mode=plan.mode, input_ids=input_ids, positions=pos,
                             out_loc=out_loc, req_rows=req_rows, prefix_lens=prefix_t,
                             seq_lens=seq_t, qo_indptr=qo, extend_lens_cpu=list(extend_lens),
                             prefix_lens_cpu=list(prefix), seq_lens_cpu=seqs, req_rows_cpu=list(rows),
                             variant=variant)
        return batch, sites

    def _counting(self, n: int) -> torch.Tensor:
        """Device int32 [0, 1, ..., n - 1] (a decode pass's token offsets and sampling sites): a view of one
        buffer, which is never written after it is made."""
        if self._counts.numel() < n:  # more requests than --max-running-requests: not from the scheduler
            self._counts = torch.arange(n, dtype=torch.int32, device=self.device)
        return self._counts[:n]

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch, sites: "SampleSites", scoring: Optional[tuple[torch.Tensor, torch.Tensor,
                int]] = None) -> tuple[torch.Tensor, Optional[Scores]]:
        """Run the model; return the logits `[sites.count, vocab]` of the tokens to sample (model dtype) and, with
        `scoring` (flat indices, the tokens after them, top-N), those positions' prompt logprobs."""
        if self.graphs is not None and self.graphs.can_run(batch):
            return self.graphs.replay(batch), None  # decode samples every token of the batch
        if self.mixed is not None and scoring is None and self.mixed.can_run(batch):
            return self.model.compute_logits(self.mixed.run(batch, sites.index)), None
        if self.pieces is not None and self.pieces.can_run(batch):
            hidden = self.pieces.run(batch, self.attn)
        else:
            self.attn.prepare(batch)
            hidden = self.forward_model(batch, self.attn)
        scores = score(self.model.compute_logits, hidden, *scoring) if scoring is not None else None
        if sites.count != hidden.shape[0]:
            hidden = hidden[sites.index]
        return self.model.compute_logits(hidden), scores


@dataclass
class SampleSites:
    """Where a pass samples: request rows, the positions the new tokens go to, and their token indices (int32
    device tensors)."""

    rows: torch.Tensor
    positions: torch.Tensor
    index: torch.Tensor
    count: int
