"""Pages reused while their backup still copies (CUDA): the step that rewrites them, or loads the host copy
back, is ordered after the copy on the device (`TierIO.backups_fence`), so the host copy holds the old bytes
and outputs stay those of the reference. The copy is held back on its stream by a sleep kernel queued before
it, as a backlog of earlier backups would."""
from __future__ import annotations

import pytest
import torch

from tests.jit.conftest import requires_cuda
from tierlm import LLM, SamplingParams
from tierlm.kvcache.host_pool import HostKVPool
from tierlm.kvcache.layout import KVLayout
from tierlm.kvcache.pool import KVPool
from tierlm.kvcache.tier_io import Ticket, TierIO
from tierlm.kvcache.transfer import PageTransfer

SLEEP_CYCLES = 200_000_000  # about 0.1 s on the copy stream before each backup


def _delay_backups(transfer: PageTransfer) -> None:
    queue = transfer.queue_backup

    def delayed(device_pages, host_pages, after=None):
        with torch.cuda.stream(transfer._backup_stream):
            torch.cuda._sleep(SLEEP_CYCLES)
        return queue(device_pages, host_pages, after)

    transfer.queue_backup = delayed


@requires_cuda
@pytest.mark.parametrize("fence", [True, False])
def test_a_rewrite_after_the_fence_leaves_the_host_copy_intact(fence):
    layout = KVLayout.gqa(2, 2, 8, torch.float32)
    pool = KVPool(layout, 16, 4, torch.device("cuda"))
    host = HostKVPool(16, layout, 4, pin=True)
    io = TierIO(PageTransfer(pool, host, "auto"))
    assert io.ordered_copies
    _delay_backups(io.transfer)
    pages, host_pages = [1, 2, 3], [5, 6, 7]
    for name in ("k", "v"):
        for t in pool[name]:
            t.fill_(1.0)
    ticket = Ticket()
    io.backup(pages, host_pages, None, ticket)
    if fence:
        torch.cuda.current_stream().wait_event(io.backups_fence())
    for name in ("k", "v"):
        for t in pool[name]:
            t.fill_(2.0)  # the next owner of the pages writes its KV
    ticket.copy.result(timeout=30)
    expected = torch.ones(3, host.bytes_per_page // 4)
    copied = host.buffer[host_pages].view(torch.float32)
    if fence:
        assert torch.equal(copied, expected)
    else:  # the test can fail: without the fence the rewrite overtakes the delayed copy
        assert not torch.equal(copied, expected)
    io.close()


@requires_cuda
def test_the_fence_of_a_backup_does_not_wait_for_the_backups_issued_after_it(caplog):
    layout = KVLayout.gqa(2, 2, 8, torch.float32)
    pool = KVPool(layout, 16, 4, torch.device("cuda"))
    host = HostKVPool(16, layout, 4, pin=True)
    io = TierIO(PageTransfer(pool, host, "auto"))
    _delay_backups(io.transfer)
    first, second = Ticket(), Ticket()
    first.seq, second.seq = 0, 1
    io.backup([1, 2], [5, 6], None, first)
    io.backup([3, 4], [7, 8], None, second)
    assert io.backups_fence(1) is io.backups_fence() and io.backups_fence(0) is not io.backups_fence()
    io.backups_fence(0).synchronize()  # the first copy is done; the second still sleeps behind it
    assert not io.backups_fence(1).query()
    second.copy.result(timeout=30)
    io.backup([10], [10], None, Ticket())  # not the controller's (a warm-up's): no fence names it
    assert io.backups_fence(1) is not io.backups_fence() and io.numbering_ok
    late = Ticket()
    late.seq = 0  # out of order: from now on every fence waits for all
    io.backup([9], [9], None, late)
    assert not io.numbering_ok and io.backups_fence(0) is io.backups_fence()
    assert "backup 0 reached the copy executor after backup 1" in caplog.text
    late.copy.result(timeout=30)
    io.close()


PROMPTS = [f"request {i} asks about the capital of country number {i} and then some more words" for i in range(6)]
GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


@requires_cuda
@pytest.mark.parametrize("io_backend", ["auto", "triton"])
def test_outputs_match_the_reference_when_pages_are_reused_mid_copy(tiny_qwen3, io_backend):
    if io_backend == "triton":
        pytest.importorskip("triton")
    opts = dict(device="cuda", dtype="float32", page_size=4, kv_cache_gb=0.0002, max_running_requests=2)
    ref = LLM(str(tiny_qwen3), enable_prefix_cache=False, **opts)
    reference = [o.token_ids for o in ref.generate(PROMPTS, GREEDY)]
    ref.close()
    llm = LLM(str(tiny_qwen3), enable_hicache=True, hicache_ratio=8, hicache_io_backend=io_backend, **opts)
    assert llm.engine.kv.io.transfer.kernel == ("triton" if io_backend == "triton" else "jit")
    _delay_backups(llm.engine.kv.io.transfer)
    assert [o.token_ids for o in llm.generate(PROMPTS, GREEDY)] == reference
    assert [o.token_ids for o in llm.generate(PROMPTS, GREEDY)] == reference  # host hits, loaded back
    stats = llm.engine.stats()["tiers"]
    assert stats["L1"]["dropped_while_copying_pages"] > 0 and stats["L2"]["tokens"] > 0
    llm.close()
