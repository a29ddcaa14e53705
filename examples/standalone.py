"""The standalone example in one command: two backends (examples/backend.py on :8001 and :8002) and the
gateway (examples/standalone.yaml on :8000, or --port). Ctrl-C stops all three.

    python examples/standalone.py
    curl -s localhost:8000/anything        # answered by 8001 and 8002 in turn (8002 twice as often)
    curl -si localhost:8000/api/users/7    # twice: X-Cache: HIT, RateLimit headers
    curl -s localhost:8000/first/hello     # always 8001, which sees /hello
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def wait_for(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000, help="the gateway's port")
    parser.add_argument("--backend-ports", type=int, nargs=2, default=(8001, 8002), metavar="PORT")
    args = parser.parse_args()
    ports = args.backend_ports
    for port in (args.port, *ports):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"port {port} is already in use: choose others with --port and --backend-ports")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the backends on SIGTERM too
    backends = [subprocess.Popen([sys.executable, str(HERE / "backend.py"), str(port), f"backend-{port}"])
                for port in ports]
    environment = {**os.environ, "BACKEND_1": f"http://127.0.0.1:{ports[0]}", "BACKEND_2": f"http://127.0.0.1:{ports[1]}"}
    try:
        for port in ports:
            wait_for(port)
        return subprocess.call([sys.executable, "-m", "premier.cli", "serve", str(HERE / "standalone.yaml"),
                                "--port", str(args.port)], env=environment)
    except KeyboardInterrupt:
        return 0
    finally:
        for process in backends:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    sys.exit(main())
