"""Child process for torch.compile tests: import tierlm first, then compile a function with Inductor (CPU).

usage: _compile_worker.py plain|bundle-build|bundle-load
Prints JSON: Inductor/AOTAutograd cache counters and the output values.
"""
import json
import sys

import tierlm  # noqa: F401  (must come first: wires the cache root)
from tierlm.cachedir import AotBundle

mode = sys.argv[1]
bundle = None
if mode.startswith("bundle"):
    bundle = AotBundle.open({"model": "toy-fn", "device_arch": "cpu", "dtype": "float32"})
    bundle.activate()

import torch  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402


def f(x, y):
    return torch.sin(x) * y + torch.cos(y).sum()


torch.manual_seed(0)
x, y = torch.randn(64), torch.randn(64)
out = torch.compile(f)(x, y)
if mode == "bundle-build":
    bundle.seal()
print(json.dumps({
    "fxgraph_hit": counters["inductor"]["fxgraph_cache_hit"],
    "fxgraph_miss": counters["inductor"]["fxgraph_cache_miss"],
    "aot_hit": counters["aot_autograd"]["autograd_cache_hit"],
    "aot_miss": counters["aot_autograd"]["autograd_cache_miss"],
    "out": out.tolist(),
}))
