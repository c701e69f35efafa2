"""The data types of the KV cache's interface to the scheduler and the step plan."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

from tierlm.kvcache.backups import BackupCommand
from tierlm.kvcache.keys import PageHasher
from tierlm.kvcache.radix import RadixNode
from tierlm.kvcache.tier_io import TierIO


class Verdict(enum.Enum):
    """Why a request was not admitted now."""

    WAIT = "wait"  # no room (pages, rows) now
    NEVER = "never"  # cannot fit even an empty pool
    PREFETCHING = "prefetch"  # its L3 prefetch still runs: requests behind it may go first


@dataclass
class Admitted:
    """An admitted request's table row, its pages so far (the cached prefix, loaded or not) and the
    locked radix node of that prefix."""

    row: int
    pages: list[int]
    node: Optional[RadixNode]
    num_prefix_pages: int  # len(pages) at admission: the pages that came from the cache


@dataclass
class TierSetup:
    """The lower tiers: host pool size, its copy executor, write policy and the optional L3 store."""

    host_pages: int
    page_bytes: int
    io: TierIO
    pinned: bool = False
    write_policy: str = "write_through"
    write_threshold: int = 2
    eviction_policy: str = "lru"  # the host tier's eviction order (`tierlm.kvcache.retention`)
    storage_write_policy: str = "write_through"  # when host copies go to L3 (`tierlm.kvcache.backups`)
    store: Any = None
    hasher: Optional[PageHasher] = None
    prefetch_policy: str = "timeout"
    prefetch_timeout: float = 1.0
    prefetch_threshold: int = 64
    load_policy: str = "always-load"  # load or recompute a host/L3 hit (`tierlm.kvcache.cost`)
    max_step_tokens: int = 0  # the scheduler's per-step prefill budget (0: none), for the cost model


@dataclass
class StepCopies:
    """The copies one step plan carries: host-to-device loads (pairs) and device-to-host backups. `fence`
    (>= 0): device pages were freed while a backup issued with an earlier plan still copied them (or a load
    reads host pages such a backup still writes), so the plan's forward and loads wait on the device for the
    backups numbered up to `fence` (`Ticket.seq`); -1: for none."""

    load_host: list[int] = field(default_factory=list)
    load_device: list[int] = field(default_factory=list)
    backups: list[BackupCommand] = field(default_factory=list)
    fence: int = -1
