"""Env wiring of third-party caches under the cache root (placeholder until the cachedir package lands)."""
from __future__ import annotations


def configure_environment() -> None:
    """Point third-party cache variables under the TierLM cache root; idempotent."""
    return None
