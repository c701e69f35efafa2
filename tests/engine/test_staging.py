"""`HostStaging`: an upload's device copy holds what was uploaded, even when the host runs steps ahead."""
from __future__ import annotations

import pytest
import torch

from tierlm.engine.staging import RING, HostStaging


def test_upload_round_trips_on_cpu():
    s = HostStaging(torch.device("cpu"))
    assert s.upload([3, 1, 2]).tolist() == [3, 1, 2]
    assert s.upload(list(range(100_000))).sum().item() == sum(range(100_000))  # beyond the first capacity


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the copies are asynchronous there")
def test_buffer_is_not_refilled_before_its_copy_has_run():
    # The device is kept busy, so every copy waits in the stream; the host uploads more than RING times
    # meanwhile (steps that sample nothing are never waited on). Each device tensor must hold its own values.
    s = HostStaging(torch.device("cuda"), capacity=1024)
    torch.cuda._sleep(200_000_000)
    outs = [s.upload([k] * 1000) for k in range(2 * RING + 1)]
    assert [int(o.min().item()) for o in outs] == list(range(2 * RING + 1))
    assert [int(o.max().item()) for o in outs] == list(range(2 * RING + 1))
