"""`benchmarks/stop_holdback.py` against a live tiny `tierlm serve`: a stop string the answers never begin keeps
nothing back (the streams with and without it agree at every token count), and the line says so."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.server.helpers import start_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import stop_holdback  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_qwen3, tmp_path_factory):
    srv = start_server(tiny_qwen3, tmp_path_factory.mktemp("holdback"))
    yield srv
    assert srv.stop() == 0, srv.log_text()


def test_a_stop_string_never_begun_keeps_nothing_back(server, capsys):
    stop_holdback.main(["--base-url", server.url, "--stop", "\x07never", "--num-prompts", "2", "--output-len", "8"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    got = re.fullmatch(r"stop '(.*)', (\d+) requests of 8 tokens, medians: first text after (\d+) tokens / [\d.]+ "
                       r"ms without it, (\d+) / [\d.]+ ms with it; ([\d.]+) characters behind", line)
    assert got, line
    assert got[2] == "2" and float(got[5]) == 0.0, line  # (the first texts' token counts follow the chunking)
