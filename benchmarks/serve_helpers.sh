# Shell helpers of the serving benchmarks (sourced, not run): a free loopback port, and waiting for a server.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_ready() {  # URL PID SECONDS [WORKERS]: poll until URL answers 200 (tcp://host:port: accepts a connection;
  # with WORKERS, the router's /readiness counts that many healthy workers); fails if PID exits or time runs out
  python3 - "$@" <<'PY'
import json, socket, sys, time, urllib.request
url, pid, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
workers = int(sys.argv[4]) if len(sys.argv) > 4 else None
def alive():
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
deadline = time.time() + limit
while time.time() < deadline:
    if not alive():
        sys.exit(f"{url}: the process exited during start-up")
    try:
        if url.startswith("tcp://"):
            host, port = url[6:].split(":")
            socket.create_connection((host, int(port)), timeout=1).close()
            sys.exit(0)
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200 and (workers is None or json.load(r).get("healthy_workers") == workers):
                sys.exit(0)
    except (OSError, ValueError):
        pass
    time.sleep(0.5)
sys.exit(f"{url}: not ready after {limit:.0f} s")
PY
}
