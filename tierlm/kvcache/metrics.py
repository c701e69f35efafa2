"""`TierMetrics`: per-tier cache counters that exist from startup (zeros until used), for `Engine.stats()`."""
from __future__ import annotations

from dataclasses import dataclass, field


def _tier() -> dict:
    # tokens: served from the tier (loaded); recomputed_tokens: hits in the tier recomputed instead (cost model)
    return {"hits": 0, "tokens": 0, "bytes": 0, "seconds": 0.0, "ops": 0, "recomputed_tokens": 0}


@dataclass
class TierMetrics:
    """Hits (requests served partly from a tier), tokens, bytes moved and seconds spent per tier, plus
    backup/eviction/prefetch counters. Written on the scheduler thread only."""

    tiers: dict = field(default_factory=lambda: {"L1": _tier(), "L2": _tier(), "L3": _tier()})
    backups: dict = field(default_factory=lambda: {"pages": 0, "bytes": 0, "skipped_no_host_room": 0,
                                                    "eviction_waits": 0, "eviction_wait_s": 0.0,
                                                    # steps a request waited for room that backups still
                                                    # copying held (admission defers instead of blocking)
                                                    "admission_waits": 0,
                                                    # times admission issued the decided backups early:
                                                    # their pages were the room it needed (ordered copies)
                                                    "issued_for_admission": 0,
                                                    # storage write_back: pages written to L3 as the host
                                                    # tier evicted them, evicted unwritten (their write had
                                                    # failed), written at shutdown, left unwritten then
                                                    "l3_on_eviction_pages": 0, "l3_skipped_on_eviction_pages": 0,
                                                    "l3_at_close_pages": 0, "l3_unwritten_at_close_pages": 0,
                                                    # storage auto: L3 writes the write gate withheld
                                                    "l3_withheld_pages": 0})
    loads: dict = field(default_factory=lambda: {"batches": 0, "bytes": 0, "seconds": 0.0})
    prefetch: dict = field(default_factory=lambda: {"started": 0, "pages_requested": 0, "pages_fetched": 0,
                                                     "partial": 0, "discarded_pages": 0, "cancelled": 0,
                                                     "probes": 0, "split": 0, "split_rejoined": 0,
                                                     "split_dropped": 0, "hidden": 0})

    def record_hit(self, tier: str, tokens: int, nbytes: int = 0, seconds: float = 0.0) -> None:
        if tokens > 0:
            t = self.tiers[tier]
            t["hits"] += 1
            t["tokens"] += tokens
            t["bytes"] += nbytes
            t["seconds"] += seconds
            t["ops"] += 1

    def record_recomputed(self, tier: str, tokens: int) -> None:
        """`tokens` of a hit in `tier` were left to recompute (loading them would have been slower)."""
        self.tiers[tier]["recomputed_tokens"] += max(0, tokens)

    def record_load(self, nbytes: int, seconds: float) -> None:
        """One completed host-to-device load batch (device-timed; L2 and prefetched L3 pages alike)."""
        self.loads["batches"] += 1
        self.loads["bytes"] += nbytes
        self.loads["seconds"] += seconds
        self.tiers["L2"]["seconds"] += seconds  # per-hit latency: load time shared by the batch's requests

    def tier_hits(self) -> dict:
        """{"L1"|"L2"|"L3": {"hits": requests, "tokens": tokens}}."""
        return {name: {"hits": t["hits"], "tokens": t["tokens"]} for name, t in self.tiers.items()}

    def snapshot(self) -> dict:
        out = {name: dict(t) for name, t in self.tiers.items()}
        for name, t in out.items():
            t["avg_latency_ms"] = 1e3 * t["seconds"] / t["ops"] if t["ops"] else 0.0
            if name != "L1":  # the load-or-recompute split of the lower tiers' hits
                t["loaded_tokens"] = t["tokens"]
        out["backups"] = dict(self.backups)
        out["prefetch"] = dict(self.prefetch)
        out["loads"] = dict(self.loads, gbps=self.loads["bytes"] / self.loads["seconds"] / 1e9
                            if self.loads["seconds"] > 0 else 0.0)
        return out
