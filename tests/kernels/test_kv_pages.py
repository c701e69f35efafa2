"""The Triton page-copy kernel against torch indexing (GPU, or the Triton interpreter), and its build for
Hopper (sm_90) on a machine without a GPU."""
from __future__ import annotations

import itertools
import textwrap

import pytest

pytest.importorskip("triton")

from tests.kernels.interp import run_script  # noqa: E402
from tests.kernels.sm90 import cuda_compiler_or_skip  # noqa: E402

SCRIPT = textwrap.dedent("""
    import random
    import torch
    from tierlm.jit.kv_transfer import KVPageTransfer, byte_pages
    from tierlm.kernels.kv_pages import TritonPageTransfer
    from tierlm.kvcache.dma import DmaPageCopier
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rng = random.Random(0)

    def pools(dtype, shape, layers, dev_pages, host_pages):
        # per layer K and V of `shape` per token, `shape[0]` tokens a page; random bytes
        bufs = [torch.randint(0, 255, (dev_pages * shape[0] * int(torch.tensor(shape[1:]).prod()) *
                                       torch.empty(0, dtype=dtype).element_size(),), dtype=torch.uint8, device=dev)
                for _ in range(2 * layers)]
        regions = [byte_pages(b, dev_pages) for b in bufs]
        page_bytes = sum(r.shape[1] for r in regions)
        host = torch.randint(0, 255, (host_pages, page_bytes), dtype=torch.uint8)
        return regions, pinned(host)

    def pinned(t):  # beside a CUDA pool every host buffer is pinned (the movers refuse pageable memory)
        return t.pin_memory() if dev == "cuda" else t

    cases = [("float32 ps 3", torch.float32, (3, 2, 4), 8), ("bf16 ps 16", torch.bfloat16, (16, 2, 64), 8),
             ("odd bytes", torch.uint8, (5, 1, 1), 1), ("int16 ps 3", torch.int16, (3, 1, 1), 2)]
    for label, dtype, shape, word in cases:
        for max_blocks in (0, 1, 3):
            regions, host = pools(dtype, shape, 3, 23, 17)
            ref_regions, ref_host = [r.clone() for r in regions], pinned(host.clone())
            t = TritonPageTransfer(regions, host, [2, 2, 2], max_blocks=max_blocks)
            assert t.word == word, (label, t.word)
            ref = KVPageTransfer(ref_regions, ref_host, [2, 2, 2], "torch")
            d, h = rng.sample(range(23), 9), rng.sample(range(17), 9)
            t.device_to_host(d, h)
            ref.device_to_host(d, h)
            if dev == "cuda":
                torch.cuda.synchronize()
            assert torch.equal(host, ref_host), (label, max_blocks, "to host")
            host.copy_(torch.randint(0, 255, host.shape, dtype=torch.uint8))
            ref_host.copy_(host)
            d, h = rng.sample(range(23), 7), rng.sample(range(17), 7)
            ids = (torch.tensor(d, dtype=torch.int32), torch.tensor(h))  # tensors of ids, as the callers pass
            t.host_to_device(*ids, layers=range(1, 3))
            ref.host_to_device(d, h, layers=range(1, 3))
            if dev == "cuda":
                torch.cuda.synchronize()
            assert all(torch.equal(a, b) for a, b in zip(regions, ref_regions)), (label, max_blocks, "to device")
            t.device_to_host([], [])
            try:
                t.device_to_host([0, 23], [0, 1])
            except ValueError as e:
                assert "out of range" in str(e)
            else:
                raise AssertionError("a device page out of range was accepted")
    # the backups' staged copy with the Triton gather/scatter (several staging rounds)
    regions, host = pools(torch.bfloat16, (16, 2, 64), 3, 23, 17)
    ref_host = pinned(host.clone())
    ref = KVPageTransfer([r.clone() for r in regions], ref_host, [2, 2, 2], "torch")
    dma = DmaPageCopier(regions, [2, 2, 2], host, staging_bytes=2 * host.shape[1], kernel="triton")
    d, h = rng.sample(range(23), 7), rng.sample(range(17), 7)
    dma.device_to_host(d, h)
    ref.device_to_host(d, h)
    if dev == "cuda":
        torch.cuda.synchronize()
    assert torch.equal(host, ref_host)
    before = [r.clone() for r in regions]
    dma.host_to_device(d[::-1], h)
    if dev == "cuda":
        torch.cuda.synchronize()
    check = KVPageTransfer(before, host, [2, 2, 2], "torch")
    check.host_to_device(d[::-1], h)
    assert all(torch.equal(a, b) for a, b in zip(regions, before))
    from tierlm.kvcache.dma import mover_fault
    assert mover_fault("triton", torch.device(dev)) is None  # the start-up self-check passes
    print("ok")
""")


def test_triton_page_copies_match_torch():
    run_script(SCRIPT)


@pytest.mark.parametrize("to_host,aligned", list(itertools.product((True, False), (True, False))))
def test_copy_kernel_compiles_for_sm90(to_host, aligned):
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tierlm.kernels.kv_pages import _copy_pages_kernel

    sig = {"table_ptr": "*i64", "host_addr": "i64", "ids_ptr": "*i64", "n": "i32", "first": "i32", "count": "i32",
           "num_regions": "i32", "page_words": "i32"}
    consts = dict(TO_HOST=to_host, WORD=tl.int64 if aligned else tl.int16, WORD_BYTES=8 if aligned else 2,
                  ALIGNED=aligned, BLOCK=1024)
    sig.update({n: "constexpr" for n in consts})
    src = ASTSource(_copy_pages_kernel, sig, consts, {(0,): [["tt.divisibility", 16]], (2,): [["tt.divisibility", 16]]})
    with cuda_compiler_or_skip():
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, num_stages=2))
    ptx = compiled.asm["ptx"]
    assert compiled.asm["cubin"]
    # 16-byte accesses where the pool allows them: the copy runs at a useful fraction of the link
    assert ("ld.global.v2.b64" in ptx) == aligned and ("st.global.v2.b64" in ptx) == aligned
