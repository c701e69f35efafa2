"""Child process for test_cache: build/load add_constant_cpu<7> and report whether it was a cache hit."""
import json
import sys

import torch

from tierlm.jit import build_jit, load_jit

entry = build_jit("add_constant_cpu", "7", cpp_files=["add_constant_cpu.h"],
                  cpp_wrappers=[("add_constant", "tierlm_kernels::add_constant_cpu<7>")])
mod = load_jit("add_constant_cpu", "7", cpp_files=["add_constant_cpu.h"],
               cpp_wrappers=[("add_constant", "tierlm_kernels::add_constant_cpu<7>")])
x = torch.arange(5, dtype=torch.int32) * 3 + 1
y = torch.empty_like(x)
mod.add_constant(y, x)
json.dump({"hit": entry.hit, "path": str(entry.path), "ok": torch.equal(y, x + 7)}, sys.stdout)
