"""Run a benchmark with some of the Triton attention backend's launch parameters changed
(`TritonAttentionConfig` fields as Python literals, e.g. `decode_waves=8` or `decode_skew="((0, 4.0),)"`): does
the engine gain what `bench_attention.py` shows for the kernel alone? Fields the start-up tuning chooses (KV
tile, warps, stages) are overwritten by it. A dotted name (`package.module.CONSTANT=VALUE`) sets a module's
constant instead, read where the engine reads it at run time.

Usage: `PYTHONPATH=. python benchmarks/with_attention_config.py FIELD=VALUE [...] -m tierlm bench offline [ARGS]`
(or a script path instead of `-m MODULE`).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import runpy
import sys

from tierlm.attention import triton_backend


def main() -> None:
    args = sys.argv[1:]
    changes = {}
    while args and "=" in args[0]:
        key, _, value = args.pop(0).partition("=")
        try:
            changes[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise SystemExit(f"{key}: {value!r} is not a Python literal") from None
    if not changes or not args:
        raise SystemExit(__doc__)
    for key in [k for k in changes if "." in k]:  # a module constant
        module, _, name = key.rpartition(".")
        target = importlib.import_module(module)
        if not hasattr(target, name):
            raise SystemExit(f"{module} has no {name}")
        setattr(target, name, changes.pop(key))
    cls = triton_backend.TritonAttentionConfig
    fields = {f.name for f in dataclasses.fields(cls)}
    if not changes.keys() <= fields:
        raise SystemExit(f"not a TritonAttentionConfig field: {sorted(changes.keys() - fields)}")
    base = cls.for_device
    cls.for_device = staticmethod(lambda device: dataclasses.replace(base(device), **changes))
    if args[0] == "-m":
        sys.argv = args[1:]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
