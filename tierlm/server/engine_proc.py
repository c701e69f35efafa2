"""The engine process: owns the `Engine`, takes requests from a ZMQ PULL socket, pushes per-step outputs.

While any request is unfinished it alternates "drain the socket without blocking" and `engine.step()`; when
idle it blocks on the socket (waking once a second to notice a dead parent or a lost tensor-parallel rank), for
`--keep-warm-s` after the last step waking every `KEEP_WARM_MS` to run `engine.keep_warm()` instead. The waiting
queue is bounded by `config.max_waiting_requests`: beyond it a request is answered REJECT 503 without touching
the engine. A lost rank ends the process with status 1 (no step can run again), and the server with it; so does
a step that runs longer than `--watchdog-timeout` (`Watchdog`).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any, Optional

import zmq

from tierlm.config import EngineConfig
from tierlm.errors import OverloadedError, RequestError, describe_startup_error
from tierlm.server import wire
from tierlm.server.watchdog import Watchdog
from tierlm.utils.process import die_with_parent

log = logging.getLogger(__name__)

IDLE_POLL_MS = 1000
LOST_GRACE_S = 2.0  # after a failed step: how long a rank's loss may take to show (`Engine.lost`)
DEFAULT_WATCHDOG_S = 300.0  # a step's bound on a GPU where --watchdog-timeout is unset
KEEP_WARM_MS = 10  # under the idle time after which a device's launch path is measurably slower to start


class EngineLoop:
    """Drives one engine from wire messages; engine-agnostic so tests can run it on a fake engine in a thread."""

    def __init__(self, engine: Any, recv_sock: zmq.Socket, send_sock: zmq.Socket, max_waiting: int,
                 parent_pid: Optional[int] = None, keep_warm_s: float = 0.0):
        self.engine = engine
        self.recv_sock = recv_sock
        self.send_sock = send_sock
        self.max_waiting = max_waiting
        self.parent_pid = parent_pid
        self.keep_warm_s = keep_warm_s  # engine.keep_warm is called only where this is > 0
        self._warm_until = 0.0  # monotonic time up to which an idle loop keeps the device warm
        self.live: set[str] = set()
        self.running = True
        self.stop_when_idle = False  # set on SIGTERM: finish what is running, then exit
        self.failure: Optional[str] = None  # why the engine can no longer serve (the process then exits 1)
        self.step_started: Optional[float] = None  # monotonic start of the step running now (`Watchdog`)

    def run(self) -> None:
        """Serve until SHUTDOWN, the parent process disappears, the engine loses a rank (`failure`), or (after
        SIGTERM) nothing is left to run."""
        self._warm_until = time.monotonic() + self.keep_warm_s  # the first request after start-up too
        while self.running:
            busy = self.engine.has_unfinished()
            if self.stop_when_idle and not busy:
                log.info("SIGTERM: no request left; engine process exits")
                break
            warm = not busy and time.monotonic() < self._warm_until
            if self.recv_sock.poll(0 if busy else KEEP_WARM_MS if warm else IDLE_POLL_MS):
                self._drain()
            elif not busy:
                if self._orphaned():
                    log.warning("frontend process is gone; engine process exits")
                    break
                why = self.engine.lost()
                if why is not None:
                    self._fail(why)
                    break
                if warm:
                    self._keep_warm()
            if self.running and self.engine.has_unfinished():
                self._step()
                self._warm_until = time.monotonic() + self.keep_warm_s
        self._abort_all(self.failure or "server is shutting down")

    def _fail(self, why: str) -> None:
        """The engine lost a rank (`why`): stop the loop; the process then exits 1."""
        log.error("the engine cannot serve any more (%s); engine process exits", why)
        self.failure, self.running = why, False

    def _keep_warm(self) -> None:
        try:
            if self.engine.keep_warm():
                return
            # nothing to keep warm (a CPU): from now on the loop idles as without it
        except Exception as e:  # noqa: BLE001  (a failed device shows in the next step, which reports it)
            log.error("keep-warm kernel failed (%s: %s); no more for this engine", type(e).__name__, e)
        self.keep_warm_s = self._warm_until = 0.0

    def _orphaned(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def _drain(self) -> None:
        waiting: Optional[int] = None
        while self.running:
            try:
                data = self.recv_sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = wire.unpack(data)
            except Exception as e:  # noqa: BLE001  (a bad message must not kill the engine)
                log.error("dropping malformed message: %s", e)
                continue
            kind = msg["t"]
            if kind == wire.ADD:
                if waiting is None:
                    waiting = self.engine.num_waiting()
                if self._add(msg, waiting):
                    waiting += 1
            elif kind == wire.ABORT:
                self._abort(msg["rid"])
            elif kind == wire.STATS:
                self._send({"t": wire.STATS, "qid": msg["qid"], "stats": self.engine.stats()})
            elif kind == wire.SHUTDOWN:
                self.running = False
            else:
                log.error("dropping message of unknown kind %r", kind)

    def _add(self, msg: dict, waiting: int) -> bool:
        rid = msg["rid"]
        try:
            if waiting >= self.max_waiting:
                raise OverloadedError(f"The server is overloaded: {waiting} requests are waiting "
                                      f"(--max-waiting-requests {self.max_waiting}); retry later")
            self.engine.add_request(rid, list(msg["ids"]), wire.params_from_wire(msg["p"]))
        except RequestError as e:
            self._reject(rid, e.http_status, e.message, e.param, e.code)
            return False
        except (ValueError, TypeError) as e:
            self._reject(rid, 400, str(e))
            return False
        except Exception as e:  # noqa: BLE001
            log.exception("add_request failed for %s", rid)
            self._reject(rid, 500, f"engine error: {type(e).__name__}")
            return False
        self.live.add(rid)
        return True

    def _abort(self, rid: str) -> None:
        if rid not in self.live:
            return
        try:
            self.engine.abort_request(rid)
        except Exception as e:  # noqa: BLE001  (already finished in this very step, or unknown)
            log.debug("abort of %s ignored: %s", rid, e)

    def _step(self) -> None:
        self.step_started = time.monotonic()
        try:
            outputs = self.engine.step()
        except Exception as e:  # noqa: BLE001
            self.step_started = None
            why = self.engine.lost(LOST_GRACE_S)
            if why is None:
                log.exception("engine step failed; aborting %d requests", len(self.live))
                self._abort_all(f"engine error: {type(e).__name__}: {e}")
            else:  # the step failed because a rank is gone: that is the reason, not the collective's error
                self._abort_all(f"engine error: {why}")
                self._fail(why)
            return
        self.step_started = None
        if not outputs:
            return
        rows = []
        for o in outputs:
            rows.append(wire.output_to_row(o))
            if o.finished:
                self.live.discard(o.request_id)
        self._send({"t": wire.OUTPUTS, "outs": rows})

    def _abort_all(self, why: str) -> None:
        rows = []
        for rid in sorted(self.live):
            self._abort(rid)
            rows.append([rid, [], "", None, True, "abort", 0, 0, 0, why])
        self.live.clear()
        if rows:
            self._send({"t": wire.OUTPUTS, "outs": rows})

    def _reject(self, rid: str, status: int, message: str, param: Optional[str] = None,
                code: Optional[str] = None) -> None:
        self._send({"t": wire.REJECT, "rid": rid, "status": status, "msg": message, "param": param, "code": code})

    def _send(self, msg: dict) -> None:
        try:
            self.send_sock.send(wire.pack(msg), zmq.NOBLOCK)
        except zmq.Again:  # no frontend connected (it is gone): nobody to tell
            log.debug("dropping %s message: no frontend connected", msg["t"])


def engine_info(engine: Any, config: EngineConfig) -> dict[str, Any]:
    """What the frontend needs to know about the loaded engine (sent once, in READY)."""
    stats = engine.stats()
    model_config = getattr(engine, "model_config", None)
    runner = getattr(engine, "runner", None)
    return {
        "model_name": engine.model_name,
        "model_dir": str(getattr(engine, "model_dir", config.model)),
        "max_model_len": int(engine.max_model_len),
        "vocab_size": int(getattr(model_config, "vocab_size", 0) or len(engine.tokenizer or ())),
        "dtype": str(getattr(runner, "dtype", config.dtype)).replace("torch.", ""),
        "device": str(getattr(engine, "device", config.device)),
        "kv_total_tokens": int(stats.get("kv_total_tokens", 0)),
        "model_type": getattr(model_config, "raw", {}).get("model_type"),
        "architectures": getattr(model_config, "raw", {}).get("architectures"),
        "sampling_defaults": engine.generation.as_dict() if hasattr(engine, "generation") else {},
    }


def step_timeout(config: EngineConfig, engine: Any) -> float:
    """`--watchdog-timeout`, or where unset 300 s on a GPU (SGLang's default) and no bound on the CPU."""
    if config.watchdog_timeout is not None:
        return config.watchdog_timeout
    return DEFAULT_WATCHDOG_S if str(getattr(engine, "device", "cpu")).startswith("cuda") else 0.0


class _Termination:
    """SIGTERM policy of the engine process: exit through the normal clean-up (so nothing, such as a semaphore,
    is leaked), but never cut off requests the frontend is still streaming. Before serving, or once the
    frontend is gone, it exits at once; while serving it finishes the running requests first (a SIGTERM sent
    to the whole process group also reaches the frontend, which lets open streams end, then sends SHUTDOWN)."""

    def __init__(self, parent_pid: int):
        self.parent_pid = parent_pid
        self.loop: Optional[EngineLoop] = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.loop is None or os.getppid() != self.parent_pid:
            raise SystemExit(0)
        self.loop.stop_when_idle = True


def run_engine_process(config: EngineConfig, req_addr: str, out_addr: str, ready_conn: Any,
                       parent_pid: int, log_level: str = "INFO") -> None:
    """Process entry point: load the engine, report READY/FATAL over `ready_conn` (msgpack bytes), serve."""
    termination = _Termination(parent_pid)
    signal.signal(signal.SIGTERM, termination)
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the frontend's to handle; it sends SHUTDOWN
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s [engine]: %(message)s")
    try:
        from tierlm.engine.engine import Engine

        engine = Engine(config)
        info = engine_info(engine, config)
    except Exception as e:  # noqa: BLE001  (reported to the launcher, which prints one line)
        if not isinstance(e, (ValueError, OSError, RuntimeError, MemoryError)):
            log.exception("engine start-up failed")
        ready_conn.send_bytes(wire.pack({"t": wire.FATAL, "msg": describe_startup_error(e)}))
        return
    ctx = zmq.Context()
    recv_sock = ctx.socket(zmq.PULL)
    recv_sock.bind(req_addr)
    send_sock = ctx.socket(zmq.PUSH)
    send_sock.setsockopt(zmq.SNDHWM, 0)
    send_sock.bind(out_addr)
    ready_conn.send_bytes(wire.pack({"t": wire.READY, "info": info}))
    ready_conn.close()
    loop = EngineLoop(engine, recv_sock, send_sock, config.max_waiting_requests, parent_pid, config.keep_warm_s)
    termination.loop = loop
    watchdog = Watchdog(engine, loop, step_timeout(config, engine), watch_ranks=config.tp_size > 1).start()
    try:
        loop.run()
    finally:
        close = getattr(engine, "close", None)
        if callable(close):
            close()  # finishes tier backups / store writes in flight
        send_sock.close(linger=500)
        recv_sock.close(linger=0)
        ctx.term()
        watchdog.stop()  # after the clean-up, which may wait on a lost rank too
    if loop.failure is not None:
        raise SystemExit(1)  # the frontend's watchdog sees the process gone and stops the server
