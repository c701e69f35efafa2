"""`make_cpp_args`: Python values as C++ template arguments."""
from __future__ import annotations

from typing import Any, Tuple

# torch dtype name -> C++ type usable in our kernels (bf16_t/fp16_t come from <tierlm/tensor.h>).
_DTYPES = {
    "float32": "float", "float64": "double", "float16": "tierlm::fp16_t", "bfloat16": "tierlm::bf16_t",
    "int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t", "uint8": "uint8_t",
    "bool": "bool", "float8_e4m3fn": "tierlm::fp8_e4m3_t",
}


class CppArgs(Tuple[str, ...]):
    """A tuple of C++ template-argument spellings; ``str()`` joins them with ", " for ``f"fn<{args}>"``."""

    def __str__(self) -> str:
        return ", ".join(self)


def cpp_arg(value: Any) -> str:
    """One value as C++: bool -> true/false, int -> literal (64-bit when needed), torch.dtype -> type name.

    A `str` is passed through untouched (an already spelled C++ expression or type).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if -(2 ** 31) <= value < 2 ** 31:
            return str(value)
        if -(2 ** 63) <= value < 2 ** 63:
            return f"{value}LL"
        raise ValueError(f"template argument {value} does not fit in 64 bits")
    if isinstance(value, str):
        return value
    name = str(value)
    if name.startswith("torch."):
        name = name[len("torch."):]
        if name in _DTYPES:
            return _DTYPES[name]
        raise ValueError(f"no C++ spelling for dtype torch.{name}")
    raise TypeError(f"cannot use {value!r} ({type(value).__name__}) as a C++ template argument; "
                    "use bool, int, torch.dtype or a C++ spelling as str")


def make_cpp_args(*values: Any) -> CppArgs:
    """``make_cpp_args(5, True, torch.bfloat16)`` -> ``CppArgs(("5", "true", "tierlm::bf16_t"))``."""
    return CppArgs(cpp_arg(v) for v in values)
