"""`serve(config)`: bind the port, start the engine process, wait until it is ready, run uvicorn, clean up.

The engine runs in a `spawn`ed process (CUDA-safe); start-up facts and failures come back over a pipe as
msgpack bytes. On SIGTERM/SIGINT uvicorn stops accepting and gives open requests up to 5 s (those still open a
second before that end with an error, `_Server`), the app's lifespan tells the engine to abort what is left and
exit, and the engine process is joined (then terminated, then killed) so none is left behind. The engine also
dies with its parent (PR_SET_PDEATHSIG, plus an idle check), and the server with its engine (`_EngineDeath`:
status 1).
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
from typing import Any, Optional

import uvicorn

from tierlm.config import EngineConfig
from tierlm.server import wire
from tierlm.server.engine_proc import run_engine_process

log = logging.getLogger("tierlm.serve")

GRACEFUL_SHUTDOWN_S = 5
ENGINE_JOIN_S = 10


class ServerStartError(RuntimeError):
    """The server could not start (port taken, engine failed to load); the message says why, in one line."""


class _Terminated(Exception):
    """SIGTERM arrived: shut down cleanly."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket before loading anything, so a taken port fails fast and clearly."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        # proto IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on such sockets; without it every response
        # after the first on a keep-alive connection waits ~40 ms (Nagle against the client's delayed ACK).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        raise ServerStartError(f"--host/--port: cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def cache_root() -> str:
    from tierlm.cachedir.root import cache_root as resolve

    try:
        return str(resolve())
    except Exception as e:  # noqa: BLE001  (the summary line must not stop the server)
        return f"<unresolved: {e}>"


class EngineProcess:
    """The spawned engine process and its socket addresses."""

    def __init__(self, config: EngineConfig, log_level: str = "INFO"):
        self.ipc_dir = tempfile.mkdtemp(prefix="tierlm-ipc-")
        self.req_addr = f"ipc://{self.ipc_dir}/req"
        self.out_addr = f"ipc://{self.ipc_dir}/out"
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=run_engine_process, name="tierlm-engine", daemon=False,
                                args=(config, self.req_addr, self.out_addr, child_conn, os.getpid(), log_level))
        self.proc.start()
        child_conn.close()

    def wait_ready(self) -> dict[str, Any]:
        """Block until READY (returns the engine facts) or raise ServerStartError with the engine's reason."""
        while True:
            if self._conn.poll(0.25):
                try:
                    msg = wire.unpack(self._conn.recv_bytes())
                except EOFError:
                    msg = {"t": wire.FATAL, "msg": None}
                if msg["t"] == wire.READY:
                    return msg["info"]
                self.proc.join(5)
                raise ServerStartError(f"the engine failed to start: {msg['msg'] or 'it exited without a reason'}")
            if not self.proc.is_alive():
                raise ServerStartError(f"the engine process exited during start-up (exit code {self.proc.exitcode}); "
                                       f"see the log above")

    def is_alive(self) -> bool:
        return self.proc.is_alive()

    def stop(self) -> None:
        """Make the engine exit and join it. The app's lifespan has normally sent SHUTDOWN already; SIGTERM covers
        the rest (start-up, or a server stopped before it ran), and the engine exits cleanly on it once nothing
        is running (see `engine_proc._Termination`). One that hangs is killed."""
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(ENGINE_JOIN_S)
        if self.proc.is_alive():
            log.warning("the engine process did not exit within %d s; killing it", ENGINE_JOIN_S)
            self.proc.kill()
            self.proc.join(5)
        self._conn.close()
        shutil.rmtree(self.ipc_dir, ignore_errors=True)


class _EngineDeath:
    """Called by the engine link's watchdog once the engine process is gone (its requests are failed next): the
    server shuts down as on SIGTERM and exits with status 1, rather than answer 503 for ever, so that a service
    manager or an orchestrator restarts it (vLLM's and SGLang's servers also exit when their engine dies)."""

    def __init__(self, engine: EngineProcess):
        self.engine = engine
        self.server: Any = None
        self.fired = False

    def __call__(self) -> bool:
        """Whether the exit is a failure (False: the server is already shutting down, as after a SIGTERM to the
        group, where the engine exits once its requests are done)."""
        if self.server is not None and self.server.should_exit:
            return False
        self.fired = True
        log.error("the engine process died (exit code %s): shutting the server down", self.engine.proc.exitcode)
        if self.server is not None:
            self.server.should_exit = True
        return True


class _Server(uvicorn.Server):
    """uvicorn's server, ending the requests still open one second before its graceful shutdown's deadline with
    a "server is shutting down" error (`EngineClient.end_all`: a stream sends its error event and `[DONE]`), so
    that no client finds its connection cut in the middle of a stream."""

    def __init__(self, config: uvicorn.Config, client: Any) -> None:
        super().__init__(config)
        self.client = client

    async def shutdown(self, sockets: Optional[list[socket.socket]] = None) -> None:
        grace = self.config.timeout_graceful_shutdown
        ending = None if grace is None else asyncio.get_running_loop().call_later(
            max(0.0, grace - 1.0), self.client.end_all, "the server is shutting down")
        try:
            await super().shutdown(sockets)
        finally:
            if ending is not None:
                ending.cancel()


def tiers(config: EngineConfig) -> str:
    """The KV tiers in use: L1 always, L2 with --enable-hicache (or a store), L3 with --kv-store."""
    if config.kv_store:
        return f"L1+L2+L3 ({config.kv_store})"
    return "L1+L2" if config.enable_hicache else "L1"


def summary_line(config: EngineConfig, info: dict[str, Any], host: str, port: int) -> str:
    auth = "API key required" if config.api_key else "off (no --api-key)"
    device = info["device"] if config.tp_size == 1 else \
        f"{info['device']} + {config.tp_size - 1} more ranks (--tp-size {config.tp_size}, {config.nnodes} node(s))"
    kv_dtype = "" if config.kv_cache_dtype == "auto" else f", {config.kv_cache_dtype}"
    return (f"serving {info['model_name']} | dtype {info['dtype']} | device {device} | "
            f"KV pool {info['kv_total_tokens']} tokens (page {config.page_size}{kv_dtype}) | "
            f"context {info['max_model_len']} | "
            f"cache root {cache_root()} | tiers {tiers(config)} | auth {auth} | http://{host}:{port}")


def load_tokenizer(config: EngineConfig, model_dir: str) -> Any:
    from tierlm.engine.errors import ModelLoadError
    from tierlm.engine.tokenizer import load_tokenizer as load

    try:
        return load(config.tokenizer or model_dir, config.revision)
    except ModelLoadError as e:
        raise ServerStartError(str(e)) from None


def serve(config: EngineConfig, log_level: str = "info") -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit status (0 after a clean SIGTERM)."""
    from tierlm.server.engine_client import EngineClient
    from tierlm.server.frontend import create_app
    from tierlm.server.requests import ServingInfo

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    sock = bind_socket(config.host, config.port)
    port = sock.getsockname()[1]
    engine: Optional[EngineProcess] = None
    try:
        engine = EngineProcess(config, log_level.upper())
        info = engine.wait_ready()
        tokenizer = None if config.skip_tokenizer_init else load_tokenizer(config, info["model_dir"])
        log.info(summary_line(config, info, config.host, port))
        died = _EngineDeath(engine)
        client = EngineClient(engine.req_addr, engine.out_addr, is_alive=engine.is_alive, on_dead=died)
        vocab = info["vocab_size"] if tokenizer is None else min(info["vocab_size"], len(tokenizer))
        serving = ServingInfo(info["model_name"], info["max_model_len"], vocab, info.get("sampling_defaults", {}))
        app = create_app(config, serving, tokenizer, client, info)
        server = _Server(uvicorn.Config(app, log_level=log_level, lifespan="on", ws="none",
                                        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S), client)
        died.server = server
        server.run(sockets=[sock])
        return 1 if died.fired else 0
    except _Terminated:
        log.info("SIGTERM: shutting down")
        return 0
    finally:
        sock.close()
        if engine is not None:
            engine.stop()
        signal.signal(signal.SIGTERM, previous)
