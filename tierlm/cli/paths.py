"""Output paths given on the command line: created up front, or refused in one line naming the flag."""
from __future__ import annotations

from pathlib import Path

from tierlm.cli.errors import CLIError


def output_dir(value: str, flag: str) -> Path:
    """Create directory `value` (given as `flag`) before any work starts, so a bad path fails at once."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise CLIError(f"{flag} {value!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{flag} {value!r}: cannot create {e.filename or value}: {e.strerror or e}") from None
    return path
