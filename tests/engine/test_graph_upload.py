"""`upload`: a captured graph goes to the device before its first replay and replays the same afterwards; where
torch gives no executable handle nothing is done."""
from __future__ import annotations

import pytest
import torch

from tierlm.engine.graph_upload import upload


def test_a_graph_without_an_executable_handle_is_left_to_its_first_launch():
    assert upload(object()) is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (graphs)")
def test_an_uploaded_graph_replays_what_it_captured():
    x = torch.arange(8, dtype=torch.float32, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = x * 2 + 1  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = x * 2 + 1
    assert upload(graph) is True
    x.copy_(torch.full_like(x, 3.0))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, torch.full_like(x, 7.0))
