"""Start-up errors in one line: an allocation failure names the flags that size memory, with the size asked
for; anything else its type and first line."""
from __future__ import annotations

from tierlm.errors import describe_startup_error, is_out_of_memory


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.cuda.OutOfMemoryError (matched by name, so no CUDA build is needed)."""


def test_an_allocation_failure_names_the_memory_flags_and_the_size():
    e = OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)")
    assert is_out_of_memory(e)
    msg = describe_startup_error(e)
    assert msg.startswith("out of memory while building the engine (2.0 GiB requested): lower --kv-cache-gb")
    assert "--piecewise-cuda-graph-max-tokens" in msg and "\n" not in msg


def test_a_host_allocation_failure_is_one_too():
    assert describe_startup_error(MemoryError()).startswith("out of memory while building the engine: lower")
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8"))


def test_any_other_error_keeps_its_type_and_first_line():
    assert describe_startup_error(ValueError("bad config\nsecond line")) == "ValueError: bad config"
    assert describe_startup_error(KeyError()) == "KeyError"
    assert not is_out_of_memory(ValueError("bad config"))
