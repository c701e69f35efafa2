"""A bounded schemathesis run against /openapi.json of a live server: no request may get a 5xx.

The server runs with a 64-token context so that every generated request finishes fast. The run has no time
budget: it sends every case of the coverage phase (the schema's boundary and invalid values, per operation) and
FUZZ_EXAMPLES generated cases per operation, with a fixed seed, so what it covers does not depend on the speed of
the machine.
"""
from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from tests.server.helpers import start_server

FUZZ_EXAMPLES = 300


@pytest.fixture(scope="module")
def server(tiny_qwen3, tmp_path_factory):
    # one intra-op thread: the tiny model's steps gain nothing from more, and the fuzzing client shares the cores
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        srv = start_server(tiny_qwen3, tmp_path_factory.mktemp("fuzz"), "--max-model-len", "64")
    yield srv
    assert srv.stop() == 0, srv.log_text()


def test_openapi_documents_the_served_model(server):
    schema = httpx.get(server.url + "/openapi.json").json()
    props = schema["components"]["schemas"]["CompletionRequest"]["properties"]
    assert props["model"]["enum"] == [server.model]
    assert {"/v1/completions", "/v1/chat/completions", "/generate", "/v1/models"} <= set(schema["paths"])


def test_schemathesis_finds_no_server_error(server, tmp_path):
    exe = shutil.which("schemathesis") or shutil.which("st")
    if exe is None:
        pytest.skip("schemathesis is not installed (pip install schemathesis)")
    cmd = [exe, "run", server.url + "/openapi.json", "--checks", "not_a_server_error",
           "--max-examples", str(FUZZ_EXAMPLES), "--workers", "2", "--request-timeout", "30",
           "--seed", "7", "--generation-database", "none", "--no-color", "--phases", "examples,coverage,fuzzing"]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:] + "\n--- server log ---\n" + server.log_text()[-4000:]
    log = server.log_text()  # a 500 in the access log ('"POST /x HTTP/1.1" 500 ...'), not a progress bar's rate
    assert '" 500 ' not in log and "Traceback" not in log, log[-4000:]
    # the server is still healthy and serving
    r = httpx.post(server.url + "/v1/completions", json={"model": server.model, "prompt": "Hi", "max_tokens": 2,
                                                          "ignore_eos": True}, timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
