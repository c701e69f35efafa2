"""`upload`: values reach the device intact, and on CUDA the call returns while work queued before it runs."""
from __future__ import annotations

import pytest
import torch

from tierlm.engine.sampler import Sampler
from tierlm.sampling_params import SamplingParams
from tierlm.utils.upload import upload


def test_values_and_dtype_on_the_cpu():
    t = upload([1, 2, 3], torch.int64, torch.device("cpu"))
    assert t.dtype == torch.int64 and t.tolist() == [1, 2, 3]
    assert upload([0.5], torch.float32, torch.device("cpu")).tolist() == [0.5]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_uploads_and_sampling_do_not_wait_for_the_queued_forward():
    # from pageable memory each upload would wait for the stream to drain (the test can fail: the sleep is
    # still running after the calls only if none of them waited)
    cuda = torch.device("cuda")
    logits = torch.randn(4, 64, device=cuda)
    params = [SamplingParams(temperature=0.7, top_k=5, top_p=0.9, min_p=0.01), SamplingParams(temperature=0),
              SamplingParams(temperature=1.0), SamplingParams(temperature=0.5, top_p=0.5)]
    sampler = Sampler(cuda, 0)
    sampler.sample(logits, params, [None] * 4)  # warm-up: kernels loaded, pinned blocks cached
    torch.cuda.synchronize()
    torch.cuda._sleep(400_000_000)
    ahead = torch.cuda.current_stream().record_event()
    values = upload(list(range(1000)), torch.int64, cuda)
    tokens = sampler.sample(logits, params, [None] * 4)
    assert not ahead.query()
    torch.cuda.synchronize()
    assert values.tolist() == list(range(1000))
    assert tokens[1].item() == logits[1].argmax().item()  # the greedy row
