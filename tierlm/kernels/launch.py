"""`CachedLaunch`: a Triton kernel launched from the host every step without the JIT's per-call work.

`kernel[grid](...)` binds every argument, computes its specialization, formats a cache key, checks the
kernel's globals and parses the launch options on every call, before the launcher proper runs. For a kernel
the engine launches once or more per step, with arguments of the same kinds each time, that is host time
paid every step. `CachedLaunch` keys the compiled kernel by a cheaper tuple and, once it holds the kernel the
JIT returned for that key, calls the compiled kernel's own launcher directly.

The key must be at least as fine as Triton's specialization, or one compiled variant would run arguments it
was not built for (an unaligned pointer in a kernel built for 16-byte alignment). So it records, per
argument: a tensor's dtype and whether its address is a multiple of 16; an integer's width class (32-bit,
64-bit, unsigned 64-bit), and, unless the parameter is `do_not_specialize`, whether it is 1 and whether it
is a multiple of 16; a bool's value; a float as its type; a constexpr's value; then the launch options and the
current device. A finer key than Triton's only costs one more trip through the JIT (which finds or builds
the right kernel and is then remembered under the finer key). Anything else (a tensor descriptor, a tuple)
sends that call through the JIT unchanged.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from tierlm.utils.triton_mode import compiled_on_gpu

_I32 = 2**31
_U64 = 2**63


def _int_class(value: int, specialized: bool) -> tuple:
    width = 0 if -_I32 <= value < _I32 else (1 if value < _U64 else 2)
    if not specialized:
        return (width,)
    return (width, value == 1, value & 15 == 0)


class CachedLaunch:
    """One Triton kernel's launches through its compiled variants, keyed cheaply (module docstring). Owned by
    the object that launches it (no module-level cache). With `enabled` False (the Triton interpreter, a
    build without compiled kernels) every call goes through the JIT as `kernel[grid](...)` would.

    Calls pass the kernel's runtime parameters positionally, in order, and every later parameter (its
    constexprs) by name; other keywords are launch options (`num_warps`, `launch_pdl`, ...). The grid is a tuple
    of one to three sizes (not a function of the meta-parameters: no autotuned kernel launches this way)."""

    def __init__(self, fn: Any, enabled: bool = True,
                 current_device: Callable[[], int] = torch.cuda.current_device) -> None:
        self._fn = fn
        self._enabled = enabled
        self._device = current_device  # the device Triton launches on (its kernels are loaded per device)
        self._compiled: dict[tuple, Any] = {}
        if enabled:
            params = fn.params
            self._names = [p.name for p in params]
            # per parameter: 0 constexpr, 1 runtime and specialized, 2 runtime and `do_not_specialize`; and
            # whether its pointer alignment is part of the specialization
            self._kinds = [0 if p.is_constexpr else (2 if p.do_not_specialize else 1) for p in params]
            self._aligned = [not p.do_not_specialize_on_alignment for p in params]

    @classmethod
    def on(cls, fn: Any, device: torch.device) -> "CachedLaunch":
        """`fn`'s launches for tensors on `device`: cached where kernels are compiled for a GPU, else the JIT's."""
        return cls(fn, enabled=compiled_on_gpu(device))

    def __getitem__(self, grid: Sequence[int]) -> Callable[..., None]:
        return lambda *args, **kwargs: self.launch(grid, args, kwargs)

    def _key(self, args: tuple, kwargs: dict) -> tuple | None:
        """The call's key, or None when an argument is of a kind the key does not cover."""
        key = [self._device(), *kwargs.items()]  # constexprs and options, in the caller's (fixed) order
        for value, kind, aligned in zip(args, self._kinds, self._aligned):
            if kind == 0:
                key.append(value)
            elif isinstance(value, torch.Tensor):
                key.append(value.dtype)
                key.append(aligned and value.data_ptr() & 15 == 0)
            elif type(value) is int:
                key.append(_int_class(value, kind == 1))
            elif type(value) is bool:
                key.append((bool, value))  # by value: finer than Triton's 1-bit type, and never coarser
            elif type(value) is float or value is None:
                key.append(type(value))
            else:
                return None
        return tuple(key)

    def launch(self, grid: Sequence[int], args: tuple, kwargs: dict) -> None:
        """`fn[grid](*args, **kwargs)`, through the remembered compiled kernel when the key has one."""
        if not self._enabled:
            self._fn[grid](*args, **kwargs)
            return
        key = self._key(args, kwargs)
        kernel = None if key is None else self._compiled.get(key)
        if kernel is None:
            kernel = self._fn[grid](*args, **kwargs)  # binds, builds if needed, launches
            if key is not None and kernel is not None and all(n in kwargs for n in self._names[len(args):]):
                self._compiled[key] = kernel  # (a parameter left to its default keeps the JIT's path)
            return
        full = args + tuple(kwargs[name] for name in self._names[len(args):])
        kernel[tuple(grid) + (1,) * (3 - len(grid))](*full)


def cdiv(a: int, b: int) -> int:
    """`ceil(a / b)` of host integers. `triton.cdiv` is a constexpr function whose host calls go through the JIT's
    call machinery (microseconds each, several per launch)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The least power of 2 at or above `n` (0 for `n <= 0`, as `triton.next_power_of_2`), on the host."""
    return 1 << (n - 1).bit_length() if n > 0 else 0
