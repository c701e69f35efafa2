"""Run a benchmark script with the Triton decode kernel reading KV_PER_PROGRAM KV heads per program where a batch
has one split per request (`TritonAttentionConfig.decode_kv_per_program`; the engine's default is 1): does the
engine gain what `bench_attention.py --kvp-sweep` shows for the kernel alone?

Usage: `PYTHONPATH=. python benchmarks/with_decode_kvp.py 2 -m tierlm bench offline [ARGS...]` (a script path or
`-m MODULE` after the count).
"""
from __future__ import annotations

import dataclasses
import runpy
import sys

from tierlm.attention import triton_backend


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    kvp = int(sys.argv[1])
    cls = triton_backend.TritonAttentionConfig
    base = cls.for_device

    def for_device(device):
        return dataclasses.replace(base(device), decode_kv_per_program=kvp)

    cls.for_device = staticmethod(for_device)
    if sys.argv[2] == "-m":
        module = sys.argv[3]
        sys.argv = [module] + sys.argv[4:]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script = sys.argv[2]
        sys.argv = [script] + sys.argv[3:]
        runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
