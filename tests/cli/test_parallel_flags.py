"""The parallel flags, spelled as vLLM and SGLang users know them, map onto `EngineConfig`."""
from __future__ import annotations

import argparse

import pytest

from tierlm.cli.args import add_engine_args, config_from_args
from tierlm.cli.errors import CLIError


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_engine_args(parser)
    return config_from_args(parser.parse_args(["--model", "m", *argv]))


def test_tp_size_and_its_vllm_spelling():
    assert parse("--tp-size", "4").tp_size == 4
    assert parse("--tensor-parallel-size", "2").tp_size == 2
    cfg = parse("--tp-size", "4", "--nnodes", "2", "--node-rank", "1", "--dist-init-addr", "10.0.0.1:29500")
    assert (cfg.nnodes, cfg.node_rank, cfg.dist_init_addr) == (2, 1, "10.0.0.1:29500")


@pytest.mark.parametrize("argv, message", [
    (("--tp-size", "0"), "--tp-size: must be >= 1"),
    (("--tp-size", "2", "--nnodes", "2"), "--dist-init-addr: required with --nnodes > 1"),
    (("--tp-size", "2", "--nnodes", "2", "--node-rank", "2", "--dist-init-addr", "h:1"),
     "--node-rank: must be in 0..1"),
    (("--dist-init-addr", "nohost"), "--dist-init-addr: expected HOST:PORT"),
    (("--dist-init-addr", "h:99999"), "--dist-init-addr: expected HOST:PORT"),
    (("--compile", "--tp-size", "2"), "--compile: cannot be combined with --tp-size > 1"),
])
def test_bad_parallel_flags_name_the_flag(argv, message):
    with pytest.raises(CLIError, match=message):
        parse(*argv)
