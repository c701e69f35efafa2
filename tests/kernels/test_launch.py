"""`CachedLaunch` keys compiled kernels at least as finely as Triton specializes them: a call whose arguments
Triton would build another variant for goes through the JIT again; a call like an earlier one runs the kernel
the JIT returned for it, with every parameter in order; a disabled launcher (the interpreter) never caches."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from tierlm.kernels.launch import CachedLaunch


class FakeCompiled:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def __getitem__(self, grid):
        return lambda *args: self.calls.append(("run", grid, args))


class FakeJit:
    """A JIT function's surface `CachedLaunch` uses: `params` and `fn[grid](...)`, which returns the kernel."""

    def __init__(self) -> None:
        def param(name, constexpr=False, dns=False, dns_align=False):
            return SimpleNamespace(name=name, is_constexpr=constexpr, do_not_specialize=dns,
                                   do_not_specialize_on_alignment=dns_align)
        self.params = [param("x"), param("y", dns_align=True), param("n"), param("seed", dns=True),
                       param("BLOCK", constexpr=True), param("FLAG", constexpr=True)]
        self.calls: list = []

    def __getitem__(self, grid):
        def jit(*args, **kwargs):
            self.calls.append(("jit", grid, args, kwargs))
            return FakeCompiled(self.calls)
        return jit


def test_cached_launch_keys() -> None:
    fn = FakeJit()
    launch = CachedLaunch(fn, current_device=lambda: 0)
    buf = torch.zeros(64, dtype=torch.float32)
    x, y = buf[:16], buf[:8]

    def call(x=x, y=y, n=32, seed=2**40, block=16, flag=True, warps=4, grid=(3,)):
        fn.calls.clear()
        launch[grid](x, y, n, seed, BLOCK=block, FLAG=flag, num_warps=warps)
        return [c[0] for c in fn.calls]

    assert call() == ["jit"]
    assert call() == ["run"]
    assert fn.calls[0][1] == (3, 1, 1), "the grid is padded to three dimensions"
    assert fn.calls[0][2] == (x, y, 32, 2**40, 16, True), "every parameter in order, constexprs included"
    assert call(seed=2**40 + 17) == ["run"], "an unspecialized integer of the same width"
    assert call(seed=5) == ["jit"], "a 32-bit value where a 64-bit one was"
    assert call(y=buf[1:9]) == ["run"], "alignment of a pointer not specialized on it"
    for changed in ({"x": buf[1:17]}, {"x": x.double()}, {"n": 33}, {"n": 1}, {"n": 2**40}, {"block": 32},
                    {"flag": False}, {"warps": 8}, {"grid": (3, 2)}):
        first = call(**changed)
        if "grid" in changed:  # the grid is not part of the key: the same kernel, launched over the new grid
            assert first == ["run"] and fn.calls[0][1] == (3, 2, 1)
        else:
            assert first == ["jit"] and call(**changed) == ["run"], changed
    assert call(n=48) == ["run"], "another multiple of 16: the variant built for 32"
    assert call(seed=True) == ["jit"] and call(seed=True) == ["run"] and call(seed=False) == ["jit"], "bools by value"
    assert call(seed=0.5) == ["jit"] and call(seed=2.5) == ["run"], "floats by type"


def test_uncovered_or_disabled_calls_go_through_the_jit() -> None:
    fn = FakeJit()
    x = torch.zeros(16)
    cached, disabled = (CachedLaunch(fn, enabled=on, current_device=lambda: 0) for on in (True, False))
    for launch, args in ((cached, (x, x, (1, 2), 7)), (disabled, (x, x, 32, 7))):
        for _ in range(2):
            fn.calls.clear()
            launch[(1,)](*args, BLOCK=16, FLAG=False)
            assert [c[0] for c in fn.calls] == ["jit"]
    launch = CachedLaunch(fn, current_device=lambda: 0)
    for _ in range(2):  # a constexpr left to its default: the runner could not be given it
        fn.calls.clear()
        launch[(1,)](x, x, 32, 7, BLOCK=16)
        assert [c[0] for c in fn.calls] == ["jit"]


def test_device_is_part_of_the_key() -> None:
    fn, device = FakeJit(), [0]
    launch = CachedLaunch(fn, current_device=lambda: device[0])
    x = torch.zeros(16)
    for want in (["jit"], ["run"], ["jit"], ["run"]):
        if want == ["jit"] and fn.calls:
            device[0] = 1  # Triton's kernels are loaded per device: another device's launch is another kernel
        fn.calls.clear()
        launch[(1,)](x, x, 32, 7, BLOCK=16, FLAG=True)
        assert [c[0] for c in fn.calls] == want


def test_host_arithmetic_matches_triton() -> None:
    import triton

    from tierlm.kernels.launch import cdiv, next_power_of_2

    for a in [*range(0, 300), 151936, 128256, 2**31 + 5, 2**40]:
        assert next_power_of_2(a) == triton.next_power_of_2(a), a
        for b in (1, 2, 3, 16, 128, 2048):
            assert cdiv(a, b) == triton.cdiv(a, b), (a, b)


def test_off_a_gpu_the_kernels_own_launches_run() -> None:
    """On the CPU (the interpreter, or no Triton build for the device) the owners' launchers pass every call to
    the JIT: nothing is cached, and the kernel's parameters are never read."""
    from tierlm.kernels.step_metadata import expand_launch, pad_decode_launch

    for make in (expand_launch, pad_decode_launch):
        assert not make(torch.device("cpu"))._enabled
    fn = FakeJit()
    launch = CachedLaunch.on(fn, torch.device("cpu"))
    for _ in range(2):
        launch[(1,)](torch.zeros(4), torch.zeros(4), 32, 7, BLOCK=16, FLAG=True)
    assert [c[0] for c in fn.calls] == ["jit", "jit"]


class Recording(CachedLaunch):
    """A `CachedLaunch` of a real kernel (its parameters) whose JIT and remembered kernel only record: each
    call's arguments as Triton binds them to the kernel's signature, the JIT's calls, and what the remembered
    kernel's runner is handed."""

    def __init__(self, jit_fn) -> None:
        import inspect

        self.signature = inspect.signature(jit_fn.fn)
        self.bound: list = []
        self.jit_calls: list = []
        self.run: list = []
        record = self

        class Jit:
            params = jit_fn.params

            def __getitem__(self, grid):
                return lambda *args, **kwargs: record.jit_calls.append(grid) or FakeCompiled(record.run)

        super().__init__(Jit(), current_device=lambda: 0)

    def launch(self, grid, args, kwargs) -> None:
        constexprs = {k: v for k, v in kwargs.items() if k in self._names}
        self.bound.append(list(self.signature.bind(*args, **constexprs).arguments.values()))
        super().launch(grid, args, kwargs)


def test_the_engines_launches_hand_every_parameter_in_order() -> None:
    """Through the package's own wrappers, with the real kernels' signatures: the second (remembered) launch
    hands the runner exactly Triton's binding of its arguments, in the kernel's parameter order."""
    import os

    if os.environ.get("TRITON_INTERPRET") == "1":
        import pytest
        pytest.skip("the interpreter's kernels carry no JIT parameters")
    from tierlm.kernels import race_sample, step_metadata as sm

    i32 = dict(dtype=torch.int32)
    table, token_ids = torch.zeros(4, 64, **i32), torch.zeros(4, 64, **i32)
    rows, pos, lens = torch.tensor([0, 2], **i32), torch.tensor([3, 5], **i32), torch.tensor([4, 6], **i32)
    dst = tuple(torch.zeros(8, dtype=d) for d in (torch.int32, torch.int64, torch.int32, torch.int64, torch.int64,
                                                     torch.int32))
    scratch = race_sample.PickScratch(torch.device("cpu"))
    cases = (
        (sm._scatter_2d_kernel, lambda launch: sm.scatter_2d(table, rows, pos, lens, launch)),
        (sm._pad_inputs_kernel, lambda launch: sm.pad_decode_inputs((rows, pos, lens), dst, table, token_ids, 8, 3,
                                                                    (rows, pos, lens), launch)),
        (sm._expand_kernel, lambda launch: sm.expand_tokens(torch.tensor([7, -1, 8]), rows, pos,
                                                            torch.tensor([0, 2, 3], **i32), table, token_ids, -1,
                                                            kernel=True, launch=launch)),
        (sm._expand_kernel, lambda launch: sm.expand_tokens(None, rows, pos, None, table, token_ids, -1, kernel=True,
                                                            launch=launch)),
        (race_sample._pick_kernel, lambda launch: race_sample.pick_tokens(torch.zeros(2, 300), None, 2**32, scratch,
                                                                          (table, rows, pos))),
    )
    for kernel, call in cases:
        rec = scratch.launch = Recording(kernel)
        call(rec), call(rec)
        assert len(rec.jit_calls) == 1 and len(rec.run) == 1 and len(rec.bound) == 2, kernel
        handed = rec.run[0][2]
        assert len(handed) == len(kernel.params) and all(a is b for a, b in zip(handed, rec.bound[1])), kernel
