"""`benchmarks.timing.device_gaps` on a made-up profiler recording: overlapping activities count once, idle
gaps land in their length bucket, the longest come first with where they start."""
from __future__ import annotations

from types import SimpleNamespace

from torch.autograd import DeviceType

from benchmarks.timing import device_gaps


def _event(start_us: float, dur_us: float, device=DeviceType.CUDA, name: str = "k"):
    return SimpleNamespace(start_ns=lambda: int(start_us * 1e3), duration_ns=lambda: int(dur_us * 1e3),
                           device_type=lambda: device, name=lambda: name)


def _prof(events):
    return SimpleNamespace(profiler=SimpleNamespace(kineto_results=SimpleNamespace(events=lambda: events)))


def test_device_gaps_counts_overlaps_once_and_buckets_the_idle_time():
    events = [_event(0, 10, name="a"), _event(5, 10, name="b"),  # overlap (an early start under PDL): busy 0-15
              _event(16, 4, name="c"),                  # 1 us gap
              _event(50, 10, name="d"),                 # 30 us gap
              _event(2060, 40, name="c"),               # 2,000 us gap
              _event(0, 5000, DeviceType.CPU), _event(3000, 0)]  # host events and empty ones ignored
    gaps = device_gaps(_prof(events))
    assert abs(gaps["span_s"] - 2100e-6) < 1e-12 and abs(gaps["busy_s"] - 69e-6) < 1e-12
    by = {(r["from_us"], r["to_us"]): r for r in gaps["gaps"]}
    assert by[(0.0, 2)]["count"] == 1 and by[(20, 100)]["count"] == 1 and by[(1000, float("inf"))]["count"] == 1
    assert sum(r["count"] for r in gaps["gaps"]) == 3
    assert abs(sum(r["seconds"] for r in gaps["gaps"]) - (2100e-6 - 69e-6)) < 1e-12
    assert [round(g["us"]) for g in gaps["longest"]] == [2000, 30, 1]
    assert abs(gaps["longest"][0]["at_s"] - 60e-6) < 1e-12
    # gaps of 2 us or more by the activity that ended last before them and the one after; the 1 us gap is not
    # among them, and "b" (not "a", which started first) bounds nothing: "c" follows it after 1 us
    assert [(p["before"], p["after"], p["count"]) for p in gaps["pairs"]] == [("d", "c", 1), ("c", "d", 1)]
    assert abs(gaps["pairs"][0]["seconds"] - 2000e-6) < 1e-12


def test_device_gaps_pairs_sum_repeated_gaps_and_name_the_activity_that_ended_last():
    events = [_event(0, 10, name="long"), _event(2, 3, name="short"),  # "short" ends first: "long" opens the gap
              _event(20, 5, name="next"),                                 # long -> next 10 us
              _event(40, 5, name="long"),                                 # next -> long 15 us
              _event(45.5, 1, name="tail"),                               # 0.5 us: not counted
              _event(60, 5, name="next"),                                 # tail -> next 13.5 us
              _event(70, 10, name="long"),                                # next -> long 5 us
              _event(83, 2, name="next")]                                 # long -> next 3 us
    pairs = device_gaps(_prof(events))["pairs"]
    assert [(p["before"], p["after"], p["count"]) for p in pairs] == [
        ("next", "long", 2), ("tail", "next", 1), ("long", "next", 2)]
    assert [round(p["seconds"] * 1e6, 3) for p in pairs] == [20.0, 13.5, 13.0]
    assert len(device_gaps(_prof(events), pairs=1)["pairs"]) == 1


def test_device_gaps_of_a_recording_without_device_activity():
    assert device_gaps(_prof([_event(0, 5, DeviceType.CPU)])) == {"span_s": 0.0, "busy_s": 0.0, "gaps": [],
                                                                  "longest": [], "pairs": []}


def test_step_timeline_splits_a_run_into_steps_and_the_device_waiting_between_them():
    from benchmarks.timing import step_timeline

    # steps at 1-4 ms, 4-9 ms (queued before the first ended: no wait) and 9.2-12 ms (0.2 ms wait), run ends 13
    t = step_timeline([1.0, 4.0, 9.2], [4.0, 9.0, 12.0], 13.0)
    assert abs(t["before_s"] - 1e-3) < 1e-12 and abs(t["after_s"] - 1e-3) < 1e-12
    assert abs(t["steps_s"] - 10.8e-3) < 1e-12 and abs(t["between_s"] - 0.2e-3) < 1e-12
    assert t["waits_over_50us"] == 1 and t["run_s"] == 13e-3
    assert abs(t["before_s"] + t["steps_s"] + t["between_s"] + t["after_s"] - t["run_s"]) < 1e-12
    assert step_timeline([], [], 2.0) == {"run_s": 2e-3, "before_s": 2e-3, "steps_s": 0.0, "between_s": 0.0,
                                          "after_s": 0.0, "waits_over_50us": 0}
