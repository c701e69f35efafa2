"""The msgpack wire format between the frontend and the engine process: outputs and sampling parameters cross
as they were, scalars that are not Python's own arrive as numbers, a malformed message is refused."""
from __future__ import annotations

import pytest

from tierlm.engine.outputs import StepOutput, TokenLogprob
from tierlm.sampling_params import SamplingParams
from tierlm.server import wire


def test_wire_roundtrip():
    o = StepOutput("r", [1, 2], "hé", [TokenLogprob(1, -0.5, [(1, -0.5), (3, -2.0)])], True, "stop", 5, 4, 2, None,
                   "</end>")
    packed = wire.pack({"t": wire.OUTPUTS, "outs": [wire.output_to_row(o)]})
    assert wire.row_to_output(wire.unpack(packed)["outs"][0]) == o
    o.prompt_logprobs = [None, TokenLogprob(7, -1.25, [(3, -0.5)], 2), TokenLogprob(9, -0.75, [], 1)]
    assert wire.row_to_output(wire.unpack(wire.pack({"t": wire.OUTPUTS, "outs": [wire.output_to_row(o)]}))["outs"][0]
                              ) == o
    p = SamplingParams(max_tokens=3, temperature=0.5, stop=["x"], seed=9, logprobs=2, prompt_logprobs=1)
    assert wire.params_from_wire(wire.unpack(wire.pack(wire.add_msg("r", [1], p)))["p"]) == p
    p = SamplingParams(logit_bias={5: -100.0, 2**40: 0.5})  # integer keys: maps unpack with string keys only
    assert wire.params_from_wire(wire.unpack(wire.pack(wire.add_msg("r", [1], p)))["p"]) == p
    with pytest.raises(ValueError):
        wire.unpack(wire.pack([1, 2]))


def test_scalars_that_are_not_python_numbers_cross_as_numbers():
    """Rows carry `StepOutput`'s fields as they are; a numpy or torch scalar among them arrives as a number."""
    import numpy as np
    import torch

    o = StepOutput("r", [np.int64(5), torch.tensor(6)], "", [TokenLogprob(np.int32(5), np.float32(-0.5), [])],
                   np.bool_(True), "stop", np.int64(3), torch.tensor(1), 2, None)
    back = wire.row_to_output(wire.unpack(wire.pack({"t": wire.OUTPUTS, "outs": [wire.output_to_row(o)]}))["outs"][0])
    assert back == StepOutput("r", [5, 6], "", [TokenLogprob(5, -0.5, [])], True, "stop", 3, 1, 2, None)
    assert type(back.finished) is bool and all(type(t) is int for t in back.new_token_ids)
    with pytest.raises(TypeError, match="cannot send a object"):
        wire.pack({"t": wire.OUTPUTS, "outs": [object()]})
    with pytest.raises(TypeError):  # a row of the wrong length: the client's receiver logs and drops the message
        wire.row_to_output(["r", [1], ""])
