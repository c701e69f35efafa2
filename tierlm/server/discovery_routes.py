"""What gateways and routers probe to discover a model server: `/v1/models` (OpenAI's list, with vLLM's
`root` and `parent`), `/version` (vLLM's), and SGLang's `/server_info` and `/model_info` (also under their
older `/get_` names). Facts only: no secret (API key, store URL) is ever part of an answer."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from tierlm.kv_events_settings import parse_kv_events_config
from tierlm.server.responses import ModelList
from tierlm.server.state import get_state
from tierlm.version import __version__

OWNED_BY = "tierlm"


async def list_models(request: Request) -> dict[str, Any]:
    st = get_state(request)
    return {"object": "list", "data": [{"id": st.info.model_name, "object": "model", "created": st.created,
                                        "owned_by": OWNED_BY, "root": st.engine_info.get("model_dir"),
                                        "parent": None, "max_model_len": st.info.max_model_len}]}


async def version(request: Request) -> dict[str, Any]:
    return {"version": __version__}


async def server_info(request: Request) -> dict[str, Any]:
    st = get_state(request)
    c, e = st.config, st.engine_info
    events = parse_kv_events_config(c.kv_events_config)
    tiers = ["L1"] + (["L2"] if c.enable_hicache or c.kv_store else []) + (["L3"] if c.kv_store else [])
    return {"engine": OWNED_BY, "version": __version__, "model_path": e.get("model_dir"),
            "served_model_name": st.info.model_name, "max_model_len": st.info.max_model_len,
            "dtype": e.get("dtype"), "device": e.get("device"), "dp_size": 1, "tp_size": c.tp_size,
            "page_size": c.page_size, "max_total_tokens": e.get("kv_total_tokens"),
            "max_running_requests": c.max_running_requests, "max_prefill_tokens": c.max_prefill_tokens,
            "enable_prefix_cache": c.enable_prefix_cache, "kv_tiers": tiers,
            "kv_events": None if events is None else {
                "endpoint": events.endpoint, "replay_endpoint": events.replay_endpoint, "topic": events.topic,
                "block_size": c.page_size, "media": ["GPU", "CPU", "DISK"][:len(tiers)]}}


async def model_info(request: Request) -> dict[str, Any]:
    st = get_state(request)
    e = st.engine_info
    return {"model_path": e.get("model_dir"), "tokenizer_path": st.config.tokenizer or e.get("model_dir"),
            "is_generation": True, "model_type": e.get("model_type"), "architectures": e.get("architectures")}


def discovery_router() -> APIRouter:
    """The discovery routes (a fresh router per app)."""
    router = APIRouter()
    router.add_api_route("/v1/models", list_models, methods=["GET"], response_model=ModelList, summary="Served models")
    router.add_api_route("/version", version, methods=["GET"], summary="Server version")
    for path in ("/server_info", "/get_server_info"):
        router.add_api_route(path, server_info, methods=["GET"], summary="Serving configuration (for routers)")
    for path in ("/model_info", "/get_model_info"):
        router.add_api_route(path, model_info, methods=["GET"], summary="Served model (for routers)")
    return router
