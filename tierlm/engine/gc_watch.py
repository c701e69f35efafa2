"""Python's cyclic garbage collector kept off the serving path (`freeze_heap`), and its pauses measured
(`GcWatch`).

A full collection walks every object the collector tracks, with the GIL held. After start-up (torch,
transformers, the model, compiled kernels, graphs) those are hundreds of thousands, and one collection takes
tens to hundreds of milliseconds: when it lands mid-serving every thread stops (the step being planned, a
copy being issued, an arriving request). `freeze_heap` collects once and moves what start-up built into the
permanent generation, which collections skip, so later ones walk only what serving allocates; `thaw_heap`
gives it back when the engine closes, so the cycles a closed engine leaves can be collected.
"""
from __future__ import annotations

import atexit
import gc
import time
from typing import Any


def freeze_heap() -> int:
    """Collect, then exempt every object alive now from later collections (`gc.freeze`); returns how many
    objects are frozen. At interpreter exit the heap is thawed first, so the last collection still finalizes
    what start-up built (an engine nobody closed, extension objects that report themselves leaked otherwise)."""
    gc.collect()
    gc.freeze()
    atexit.unregister(gc.unfreeze)  # once, however many engines froze
    atexit.register(gc.unfreeze)
    return gc.get_freeze_count()  # counting walks the whole permanent generation: once, here


def thaw_heap() -> None:
    """Make frozen objects collectable again (the next collection, or the next engine's `freeze_heap`,
    frees what is garbage among them)."""
    gc.unfreeze()


class GcWatch:
    """Counts the collector's runs per generation and their pause (from `gc.callbacks`, process-wide: every
    collection of the process counts, whoever triggered it). `frozen` is what `freeze_heap` returned (0: the
    heap was not frozen); it is not counted again, since `gc.get_freeze_count` walks every frozen object (tens
    of milliseconds after start-up) and `snapshot` is on the serving path. `close` stops watching."""

    def __init__(self, frozen: int = 0) -> None:
        self.frozen = frozen
        self.collections = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest_s = 0.0
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        spent, gen = time.perf_counter() - self._started, info["generation"]
        self.collections[gen] += 1
        self.seconds[gen] += spent
        self.longest_s = max(self.longest_s, spent)

    def snapshot(self) -> dict:
        """Collections and seconds per generation (0, 1, 2), the longest pause, objects frozen at start-up."""
        return {"collections": list(self.collections), "seconds": [round(s, 6) for s in self.seconds],
                "longest_s": round(self.longest_s, 6), "frozen_objects": self.frozen}

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
