"""`EngineConfig`: the one frozen configuration of a TierLM engine.

Every command-line flag of `tierlm serve|generate|bench` maps one to one onto a field here: the CLI is
generated from the field metadata (`help`, `group`, `choices`), so a new knob is added in exactly one place.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from tierlm.kv_events_settings import parse_kv_events_config


def _opt(default: Any, help: str, group: str, choices: Optional[tuple] = None, flag: Optional[str] = None,
         registry: Optional[str] = None, aliases: tuple = ()):
    """A field with CLI metadata; `registry` names a registry that the CLI reads the choices from (this module
    sits below every registry and cannot import them)."""
    meta = {"help": help, "group": group}
    if choices is not None:
        meta["choices"] = choices
    if registry is not None:
        meta["registry"] = registry
    if flag is not None:
        meta["flag"] = flag
    if aliases:
        meta["aliases"] = aliases  # other spellings of the flag (those of vLLM or SGLang)
    return field(default=default, metadata=meta)


GROUPS = ("model", "parallel", "memory", "scheduler", "cache tiers", "server")
# Lower bounds of numeric flags, checked before anything divides by them; an unset optional flag (None) passes.
AT_LEAST = (
    ("tp_size", 1), ("nnodes", 1), ("page_size", 1), ("max_running_requests", 1), ("max_prefill_tokens", 1),
    ("piecewise_cuda_graph_max_tokens", -1), ("max_mixed_tokens", 1), ("mixed_backlog_steps", 0),
    ("mixed_burst_tokens", 0), ("reserve_new_tokens", 0), ("max_waiting_requests", 1), ("max_model_len", 1),
    ("hicache_write_threshold", 1), ("hicache_prefetch_timeout", 0), ("keep_warm_s", 0),
    ("watchdog_timeout", 0),
)  # value >= bound
ABOVE = (
    ("kv_cache_gb", 0), ("hicache_ratio", 0), ("hicache_size", 0), ("kv_store_max_gb", 0), ("kv_store_timeout", 0),
    ("request_body_timeout", 0),
)  # value > bound


@dataclass(frozen=True)
class EngineConfig:
    """All settings of one engine (model, memory, scheduling, cache tiers, HTTP server).

    Frozen so that every component sees the same values for the life of the engine; derive a changed
    copy with `dataclasses.replace`.
    """

    # --- model ---
    model: str = _opt("", "Local Hugging Face model directory, hub id, or builtin:NAME (a shipped config, "
                      "with --load-format dummy).", "model")
    tokenizer: Optional[str] = _opt(None, "Tokenizer directory or hub id (default: the model's).", "model")
    skip_tokenizer_init: bool = _opt(False, "Load no tokenizer: requests must be token ids and outputs are ids "
                                     "only (benchmarks on shipped configs).", "model")
    revision: Optional[str] = _opt(None, "Hub revision (branch, tag or commit) when --model is a hub id.", "model")
    load_format: str = _opt("auto", "'auto' reads safetensors; 'dummy' makes random weights of the configured shape.",
                            "model", choices=("auto", "dummy"))
    dtype: str = _opt("auto", "Weight and activation dtype; 'auto' takes the checkpoint's, bfloat16 for a float32 "
                      "checkpoint on a GPU (as vLLM), float32 on CPU.", "model",
                      choices=("auto", "float32", "bfloat16", "float16"))
    device: str = _opt("auto", "Device to run on; 'auto' picks CUDA when present.", "model",
                       choices=("auto", "cpu", "cuda"))
    max_model_len: Optional[int] = _opt(None, "Context limit in tokens (default: the model's context, its "
                                        "max_position_embeddings stretched by a linear or YaRN rope scaling; "
                                        "a longer one is refused unless TIERLM_ALLOW_LONG_MAX_MODEL_LEN=1).", "model")
    seed: int = _opt(0, "Seed for dummy weights and for sampling of requests that give no seed.", "model")
    served_model_name: Optional[str] = _opt(None, "Model name reported by the API (default: --model).", "model")
    generation_config: str = _opt("auto", "Where requests' default sampling (temperature, top_p, top_k, min_p) and "
                                  "extra end-of-sequence ids come from: 'auto' the model folder's "
                                  "generation_config.json (as vLLM and SGLang do), 'none' TierLM's defaults only, "
                                  "or a folder holding a generation_config.json. A request's own values win.",
                                  "model")
    compile: bool = _opt(False, "Compile the model's forward with torch.compile (Inductor, one graph with "
                         "attention as its one opaque call) ahead of time; the compiled code, Inductor's and "
                         "Triton's caches live in the per-model AOT tree of the cache root (aot/<key>/) and are "
                         "reused on the next start. CUDA graphs capture the compiled decode.", "model")
    small_batch_gemv: bool = _opt(True, "Run the linear layers of small decode batches (1-4 rows, bf16/fp16, CUDA) "
                                  "with TierLM's own kernel where a timing at the first start, kept in the cache "
                                  "root's autotune store, found it faster than cuBLAS for that weight shape.",
                                  "model")
    small_batch_gemm: bool = _opt(True, "Run the linear layers of decode batches of 5-256 rows (bf16/fp16, CUDA) "
                                  "with TierLM's tensor-core kernel for skinny products where a timing at the "
                                  "first start, kept in the cache root's autotune store, found it faster than "
                                  "cuBLAS for that weight shape and batch (--no-small-batch-gemm: cuBLAS).",
                                  "model")
    attention_backend: str = _opt("auto", "Attention implementation; 'auto' = triton on CUDA (per-head and latent "
                                  "attention), torch elsewhere. Choices: 'auto' and the registered "
                                  "backends (tierlm/attention/registry.py).", "model", registry="attention")
    mla_extend_form: str = _opt("auto", "Form of latent attention (DeepSeek's MLA) for prefill chunks and prefix "
                                "hits: 'auto' decompresses each request whose new tokens x sequence length reach "
                                "2^22 (its latents up-projected once to per-head keys and values, then flash "
                                "attention: about a third of the FLOPs per query-key pair) and keeps the rest "
                                "absorbed (attention over the cached latents, which reads the least memory); "
                                "'absorbed' or 'decompressed' for every extend request (decompressed only while its "
                                "up-projected keys and values stay under 2^28 elements). Decode is always absorbed.",
                                "model", choices=("auto", "absorbed", "decompressed"))
    # --- parallel ---
    tp_size: int = _opt(1, "Tensor-parallel ranks: the model's heads, MLP and vocabulary are split over this many "
                        "processes, one per GPU (NCCL), or CPU processes over gloo.", "parallel",
                        aliases=("--tensor-parallel-size",))
    nnodes: int = _opt(1, "Nodes the tensor-parallel ranks span (each node runs --tp-size / --nnodes of them); "
                       "node 0 serves HTTP and decides, the others only execute.", "parallel")
    node_rank: int = _opt(0, "This node's index among --nnodes.", "parallel")
    dist_init_addr: Optional[str] = _opt(None, "HOST:PORT on node 0 where the ranks meet (required with --nnodes > "
                                         "1; default: a free port on 127.0.0.1).", "parallel")
    # --- memory ---
    kv_cache_gb: Optional[float] = _opt(None, "Device KV pool size in GiB (default: a fraction of free GPU memory, "
                                        "or 1 GiB on CPU).", "memory")
    gpu_memory_utilization: float = _opt(0.85, "Fraction of total GPU memory the engine may use (weights + KV + "
                                         "activations) when --kv-cache-gb is not given.", "memory")
    kv_cache_dtype: str = _opt("auto", "Element type of the KV cache in every tier; 'auto' keeps the model's dtype. "
                               "'fp8' (= 'fp8_e4m3', scale 1.0, out-of-range values saturate) keeps one byte per "
                               "value, half of bf16's: twice the tokens per GiB in every tier and half the bytes "
                               "decode attention reads and the tiers move; outputs then "
                               "differ from 'auto' within fp8 rounding, but not between tiers (per-head K/V "
                               "and DeepSeek's latents alike).", "memory",
                               choices=("auto", "fp8", "fp8_e4m3"))
    page_size: int = _opt(16, "Tokens per KV page (the unit of allocation, prefix matching and tier transfers).",
                          "memory")
    # --- scheduler ---
    max_running_requests: int = _opt(256, "Most requests decoding at once.", "scheduler")
    max_prefill_tokens: int = _opt(8192, "Per-step token budget for prefill; longer prompts are prefilled in chunks "
                                   "of at most this many tokens.", "scheduler")
    reserve_new_tokens: int = _opt(4096, "KV reserved at admission for each request's output, in tokens (0: all of "
                                   "max_tokens). A request that outgrows it while the pool is full is retracted "
                                   "to the prefix cache and resumed later.", "scheduler")
    enable_mixed_chunk: bool = _opt(False, "Mixed steps: while requests are decoding, run the next prefill chunk "
                                    "in the same forward pass as their decode tokens (one extend pass), so new "
                                    "prompts do not stall running decodes; pure-decode steps keep their CUDA "
                                    "graphs.", "scheduler")
    max_mixed_tokens: int = _opt(2048, "Per-step token budget of a mixed step: its decode tokens (one per running "
                                 "request) plus the prefill chunk that joins them (at most --max-prefill-tokens). "
                                 "When the decodes alone fill it, prefill runs in a step of its own.", "scheduler")
    mixed_backlog_steps: int = _opt(2, "A mixed step takes about 1/N of the prefill tokens waiting (rounded up to a "
                                    "pass of 256, 512, ... rows with its decodes, at most --max-mixed-tokens): one "
                                    "prompt is spread over N steps that cost its decodes less than one whole pass, "
                                    "a burst of prompts gets whole budgets. 0: every mixed step takes the whole "
                                    "budget.",
                                    "scheduler")
    mixed_burst_tokens: int = _opt(4096, "While more prefill tokens than this wait, a mixed step takes the whole "
                                   "--max-mixed-tokens budget (a burst drains in the largest mixed passes) "
                                   "instead of 1/--mixed-backlog-steps of them; 0: never.", "scheduler")
    mixed_burst_prefill: bool = _opt(False, "While more than --mixed-burst-tokens prefill tokens wait, run them in "
                                     "a prefill step of its own (the decodes wait one step, as with mixed steps "
                                     "off) instead of a whole mixed budget: bursts drain in larger passes.",
                                     "scheduler")
    piecewise_cuda_graph_max_tokens: int = _opt(
        -1, "Extend passes (prefill chunks, mixed steps) of up to this many tokens replay CUDA graphs of the work "
        "between attention calls, captured at start-up for a ladder of token counts (dense models on CUDA, "
        "with --cuda-graph); 0 turns it off; -1 (auto): on one GPU the larger of --max-mixed-tokens (with mixed "
        "steps on) and --max-prefill-tokens (at most 8192); under tensor parallelism --max-mixed-tokens with "
        "mixed steps on, else off.", "scheduler")
    mixed_cuda_graph: bool = _opt(True, "With --enable-mixed-chunk and --cuda-graph: capture whole mixed steps "
                                  "(attention included) as CUDA graphs at start-up, for 256, 512, 768, ... rows up "
                                  "to --max-mixed-tokens and 16, 32, ... decodes, so a mixed step costs one replay "
                                  "of host time (steps are padded to the next captured row count; those that do not "
                                  "fit replay the piecewise graphs). --no-mixed-cuda-graph: piecewise graphs only.",
                                  "scheduler")
    prefill_cuda_graph: bool = _opt(True, "Where extend passes replay graph pieces (--piecewise-cuda-graph-max-"
                                    "tokens): also capture whole prefill passes (no decodes, at most 64 prompts, "
                                    "attention included) at start-up for the same ladder of token counts, so such a "
                                    "pass costs one replay of host time instead of one launch per layer. "
                                    "--no-prefill-cuda-graph: the pieces only.", "scheduler")
    schedule_policy: str = _opt("fcfs", "Order in which waiting requests are admitted: arrival (fcfs), the "
                                "request's priority, lower first, then arrival (priority), or the longest "
                                "cached prefix first (lpm; arrival order beyond 128 waiting requests).",
                                "scheduler", choices=("fcfs", "priority", "lpm"))
    max_waiting_requests: int = _opt(4096, "Bound of the waiting queue; beyond it new requests are refused "
                                     "(HTTP 503).", "scheduler")
    enable_prefix_cache: bool = _opt(True, "Reuse KV of shared prompt prefixes (radix cache).", "scheduler")
    cuda_graph: bool = _opt(True, "Capture decode steps as CUDA graphs (CUDA only).", "scheduler")
    overlap_schedule: bool = _opt(True, "Prepare step N+1 on the host while the device runs step N (results come "
                                  "one step late; on the CPU there is little to overlap).",
                                  "scheduler")
    gc_freeze: bool = _opt(True, "Exempt the objects built at start-up from Python's garbage collections "
                           "(gc.freeze), so a full collection while serving walks only what serving allocated "
                           "instead of stopping every thread for the whole heap.", "scheduler")
    keep_warm_s: float = _opt(0.0, "Seconds after its last step that an idle server keeps the launch path (the "
                              "driver's and the device's) warm by running one tiny kernel every 10 ms (CUDA only): "
                              "a request arriving after a pause of tens of milliseconds then starts a little sooner "
                              "(the host's own wake-up is not covered; docs/benchmarks.md). 0 (default): the "
                              "device idles as soon as the engine does.", "scheduler")
    # --- cache tiers ---
    enable_hicache: bool = _opt(False, "Hierarchical KV cache: back the device prefix cache (L1) with a pinned host "
                                "tier (L2); evicted prefixes stay matchable and load back instead of recomputing.",
                                "cache tiers")
    hicache_ratio: float = _opt(2.0, "Host KV pool size as a multiple of the device KV pool.", "cache tiers")
    hicache_size: Optional[float] = _opt(None, "Host KV pool size in GiB (overrides --hicache-ratio).", "cache tiers")
    hicache_write_policy: str = _opt("write_through", "When device pages are backed up to host: on insert "
                                     "(write_through), once a prefix was hit --hicache-write-threshold times "
                                     "(write_through_selective), or on device eviction (write_back).",
                                     "cache tiers", choices=("write_through", "write_through_selective", "write_back"))
    hicache_write_threshold: int = _opt(2, "Hits before write_through_selective backs a prefix up.", "cache tiers")
    hicache_eviction_policy: str = _opt("adaptive", "Which host (L2) copies go first when the host tier needs "
                                        "room: least recently used (lru), or (adaptive) lru until shadows of "
                                        "both show that keeping what was used again would hold more of the "
                                        "recent prompts (conversations that come back in turn), and back.",
                                        "cache tiers", choices=("lru", "adaptive"))
    hicache_storage_write_policy: str = _opt("auto", "When host copies are written to the L3 store: as "
                                             "soon as they exist (write_through); only when the host tier evicts "
                                             "them and at shutdown, for at most 60 s (write_back: nothing is written "
                                             "while the host tier has room); or write_back until the host tier "
                                             "has evicted as many pages as it holds, write_through from then on "
                                             "and from the start for a store shared with a fleet (auto, Redis; "
                                             "for a store only this engine reads, auto withholds writes while they "
                                             "are not read back and loads from it would not pay).",
                                             "cache tiers", choices=("write_through", "write_back", "auto"))
    hicache_load_policy: str = _opt("auto", "How much of a host (L2) or L3 prefix hit to load rather than "
                                    "recompute: 'cost' weighs the measured transfer bandwidth of each tier against "
                                    "the measured prefill speed and loads what makes the step fastest (everything "
                                    "until measured), 'always-load' loads every hit, 'auto' is 'cost' where loads "
                                    "run beside the prefill (asynchronous copies, CUDA) and 'always-load' "
                                    "elsewhere.", "cache tiers", choices=("auto", "cost", "always-load"))
    hicache_io_backend: str = _opt("auto", "How host-tier KV is loaded (layer by layer, overlapping the prefill; "
                                   "backups always go by DMA): 'jit' (our copy kernel), 'dma' (copy engine + "
                                   "scatter), 'triton' (the copy kernel written in Triton), 'auto' (per step: jit "
                                   "beside a large prefill, else dma; triton where our kernels cannot build) or "
                                   "'torch' ops (synchronous).", "cache tiers",
                                   choices=("auto", "jit", "dma", "triton", "torch"))
    kv_store: Optional[str] = _opt(None, "L3 KV store (implies --enable-hicache): 'file' (<cache root>/kv), "
                                   "'file:///dir', 'redis://[:password@]host:port/db', or 'module:Class' "
                                   "(a KVStore subclass; '?k=v&..' passes keyword options).", "cache tiers")
    kv_store_max_gb: float = _opt(64.0, "Byte budget of the file store in GiB (least recently used pages go "
                                  "first).", "cache tiers")
    kv_store_timeout: float = _opt(2.0, "Seconds an L3 network operation may take before it counts as an outage.",
                                   "cache tiers")
    hicache_prefetch_policy: str = _opt("timeout", "How long an L3 hit may delay its request: take what has "
                                        "arrived when the request is next admissible (best_effort), wait for the "
                                        "whole prefetch (wait_complete), or wait at most --hicache-prefetch-timeout "
                                        "(timeout). Other requests are never held up.", "cache tiers",
                                        choices=("best_effort", "wait_complete", "timeout"))
    hicache_prefetch_timeout: float = _opt(1.0, "Seconds a request waits for its L3 prefetch under the 'timeout' "
                                           "policy, plus 0.1 s per 1024 prefetched tokens.", "cache tiers")
    hicache_prefetch_threshold: int = _opt(64, "Prefetch from L3 only when it holds at least this many tokens "
                                           "beyond the L1/L2 match.", "cache tiers")
    kv_events_config: Optional[str] = _opt(None, "Publish KV-cache events (pages stored in and removed from each "
                                           "tier) over ZMQ in vLLM's format, as a JSON object: "
                                           '\'{"publisher": "zmq", "endpoint": "tcp://*:5557", "topic": "kv", '
                                           '"replay_endpoint": "tcp://*:5558"}\' (see docs/fleet.md).',
                                           "cache tiers")
    # --- server ---
    host: str = _opt("127.0.0.1", "Address the HTTP server binds.", "server")
    port: int = _opt(8000, "Port of the HTTP server.", "server")
    api_key: Optional[str] = _opt(None, "Require 'Authorization: Bearer KEY' on /v1 endpoints, /generate, "
                                  "/tokenize and /detokenize (default: no authentication).", "server")
    reasoning_parser: Optional[str] = _opt(None, "Split a thinking model's reasoning (between <think> and </think>) "
                                           "from its answer in chat responses, as `reasoning_content` beside "
                                           "`content` (a request's separate_reasoning: false keeps them together).",
                                           "server", choices=("qwen3", "deepseek-r1", "deepseek_r1"))
    tool_call_parser: Optional[str] = _opt(None, "Take the function calls a model writes into its answer out as "
                                           "OpenAI `tool_calls` for chat requests with `tools` (tool_choice "
                                           "'auto'): hermes (Qwen2.5, Qwen3; SGLang's qwen25) or llama3_json "
                                           "(Llama 3.1+; SGLang's llama3).", "server",
                                           choices=("hermes", "qwen25", "qwen", "llama3_json", "llama3"))
    enable_auto_tool_choice: bool = _opt(False, "vLLM's spelling, accepted: --tool-call-parser alone turns automatic "
                                         "tool choice on (as SGLang does).", "server")
    request_body_timeout: float = _opt(30.0, "Seconds a client has to send a request body; a slower one is "
                                       "answered 408 and disconnected.", "server")
    watchdog_timeout: Optional[float] = _opt(None, "Seconds one engine step may run before the server counts the "
                                             "engine as hung (a stuck device, or a tensor-parallel rank that "
                                             "stopped answering without dying) and exits with status 1 for its "
                                             "supervisor to restart it; 0 turns the bound off (default: 300 on a "
                                             "GPU, off on the CPU, where one prefill chunk of a large model can "
                                             "take longer).", "server")

    def replace(self, **changes: Any) -> "EngineConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise ValueError naming the flag of the first invalid field."""
        def bad(name: str, why: str) -> None:
            raise ValueError(f"--{name.replace('_', '-')}: {why}")

        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                bad(f.name, f"must be a finite number, got {value}")
        for name, least in AT_LEAST:
            if getattr(self, name) is not None and getattr(self, name) < least:
                bad(name, f"must be >= {least}, got {getattr(self, name)}")
        for name, bound in ABOVE:
            if getattr(self, name) is not None and getattr(self, name) <= bound:
                bad(name, f"must be > {bound}, got {getattr(self, name)}")
        if not self.model:
            bad("model", "a model directory or hub id is required")
        if self.tp_size % self.nnodes:
            bad("tp_size", f"{self.tp_size} ranks cannot be spread evenly over --nnodes {self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            bad("node_rank", f"must be in 0..{self.nnodes - 1}, got {self.node_rank}")
        if self.nnodes > 1 and not self.dist_init_addr:
            bad("dist_init_addr", "required with --nnodes > 1 (HOST:PORT of node 0)")
        if self.dist_init_addr is not None:
            host, _, port = self.dist_init_addr.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                bad("dist_init_addr", f"expected HOST:PORT, got {self.dist_init_addr!r}")
        if self.compile and self.tp_size > 1:
            bad("compile", "cannot be combined with --tp-size > 1 yet (each rank would need its own AOT tree)")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            bad("gpu_memory_utilization", f"must be in (0, 1], got {self.gpu_memory_utilization}")
        if (self.enable_hicache or self.kv_store) and not self.enable_prefix_cache:
            bad("enable_hicache", "the KV tiers extend the prefix cache; drop --no-enable-prefix-cache")
        if parse_kv_events_config(self.kv_events_config) and not self.enable_prefix_cache:
            bad("kv_events_config", "the events describe the prefix cache; drop --no-enable-prefix-cache")
        if not 0 < self.port < 65536:
            bad("port", f"must be in 1..65535, got {self.port}")
        if self.enable_auto_tool_choice and not self.tool_call_parser:
            bad("enable_auto_tool_choice", "needs --tool-call-parser (hermes for Qwen, llama3_json for Llama)")
        if self.api_key is not None and not self.api_key.strip():
            bad("api_key", "must not be empty (leave the flag out to serve without authentication)")
        if self.kv_store and self.kv_store.startswith(("redis://", "rediss://", "unix://")):
            from redis.connection import parse_url

            try:
                parse_url(self.kv_store)
            except ValueError as e:  # the URL may hold a password: do not echo it
                bad("kv_store", f"not a valid Redis URL: {e}")
