"""`sampling_from_flags`: a command's sampling flags as a checked `SamplingParams`, a bad one named as its flag."""
from __future__ import annotations

from typing import Any

from tierlm.cli.errors import CLIError
from tierlm.sampling_params import SamplingParams

FLAG_OF = {"seed": "sampling-seed"}  # SamplingParams fields whose flag is not the field's name


def sampling_from_flags(**fields: Any) -> SamplingParams:
    """`SamplingParams(**fields)`, validated; a `CLIError` naming the flag of the first bad field."""
    from tierlm.errors import RequestError

    params = SamplingParams(**fields)
    try:
        params.validate()
    except RequestError as e:
        flag = FLAG_OF.get(e.param or "", (e.param or "").replace("_", "-"))
        raise CLIError(f"--{flag}: {e}") from None
    return params
