"""`benchmarks.timing.device_gaps` on a made-up profiler recording: overlapping activities count once, idle
gaps land in their length bucket, the longest come first with where they start."""
from __future__ import annotations

from types import SimpleNamespace

from torch.autograd import DeviceType

from benchmarks.timing import device_gaps


def _event(start_us: float, dur_us: float, device=DeviceType.CUDA):
    return SimpleNamespace(start_ns=lambda: int(start_us * 1e3), duration_ns=lambda: int(dur_us * 1e3),
                           device_type=lambda: device)


def _prof(events):
    return SimpleNamespace(profiler=SimpleNamespace(kineto_results=SimpleNamespace(events=lambda: events)))


def test_device_gaps_counts_overlaps_once_and_buckets_the_idle_time():
    events = [_event(0, 10), _event(5, 10),  # overlap (an early start under PDL): busy 0-15
              _event(16, 4),                  # 1 us gap
              _event(50, 10),                 # 30 us gap
              _event(2060, 40),               # 2,000 us gap
              _event(0, 5000, DeviceType.CPU), _event(3000, 0)]  # host events and empty ones ignored
    gaps = device_gaps(_prof(events))
    assert abs(gaps["span_s"] - 2100e-6) < 1e-12 and abs(gaps["busy_s"] - 69e-6) < 1e-12
    by = {(r["from_us"], r["to_us"]): r for r in gaps["gaps"]}
    assert by[(0.0, 2)]["count"] == 1 and by[(20, 100)]["count"] == 1 and by[(1000, float("inf"))]["count"] == 1
    assert sum(r["count"] for r in gaps["gaps"]) == 3
    assert abs(sum(r["seconds"] for r in gaps["gaps"]) - (2100e-6 - 69e-6)) < 1e-12
    assert [round(g["us"]) for g in gaps["longest"]] == [2000, 30, 1]
    assert abs(gaps["longest"][0]["at_s"] - 60e-6) < 1e-12


def test_device_gaps_of_a_recording_without_device_activity():
    assert device_gaps(_prof([_event(0, 5, DeviceType.CPU)])) == {"span_s": 0.0, "busy_s": 0.0, "gaps": [],
                                                                  "longest": []}
