"""Flags whose choices come from a registry: the CLI offers exactly what is registered, without torch."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from tierlm.attention.registry import all_backend_names
from tierlm.cli.args import add_engine_args


def test_attention_backend_choices_are_the_registry():
    parser = argparse.ArgumentParser()
    add_engine_args(parser)
    action = next(a for a in parser._actions if a.dest == "attention_backend")
    assert tuple(action.choices) == ("auto",) + all_backend_names()
    assert {"torch", "triton"} <= set(action.choices)
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--attention-backend", "flash"])


def test_building_the_cli_imports_no_torch():
    code = "import sys; from tierlm.cli.main import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
