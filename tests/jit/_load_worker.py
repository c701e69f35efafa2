"""Child process for test_cache: build/load add_constant_cpu<C> (C = argv[1], default 7) and report
whether it was a cache hit."""
import json
import sys

import torch

from tierlm.jit import build_jit, load_jit

c = int(sys.argv[1]) if len(sys.argv) > 1 else 7
kwargs = dict(cpp_files=["add_constant_cpu.h"],
              cpp_wrappers=[("add_constant", f"tierlm_kernels::add_constant_cpu<{c}>")])
entry = build_jit("add_constant_cpu", str(c), **kwargs)
mod = load_jit("add_constant_cpu", str(c), **kwargs)
x = torch.arange(5, dtype=torch.int32) * 3 + 1
y = torch.empty_like(x)
mod.add_constant(y, x)
json.dump({"hit": entry.hit, "path": str(entry.path), "ok": torch.equal(y, x + c)}, sys.stdout)
