"""Start and stop a real MLflow tracking server on loopback for tests.

The server uses a SQLite database backend and a local artifact root, exactly as
``docs/cluster.md`` documents; waits are bounded and the process group is always
stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(root: Path, port: int) -> list[str]:
    """The documented ``mlflow server`` command, with the store under ``root``."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]


class MlflowServer:
    """``mlflow server`` under ``root``: :meth:`start` returns at once, :meth:`wait` until healthy.

    Starting early and waiting late lets the server boot while other tests run.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.uri = ""
        self._log = None

    def start(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self._log = open(self.root / "server.log", "wb")  # noqa: SIM115 - the server writes it until stop()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        self.proc = subprocess.Popen(
            server_command(self.root, port),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.uri = f"http://127.0.0.1:{port}"
        return self

    def wait(self, timeout: float = 180) -> str:
        """Block until ``/health`` answers; returns the URI."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}):\n{_tail(self.root / 'server.log')}")
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self.uri
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server not healthy after {timeout}s:\n{_tail(self.root / 'server.log')}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def mlflow_server(root: Path, timeout: float = 180) -> Iterator[str]:
    """Run ``mlflow server`` under ``root``; yields its ``http://127.0.0.1:<port>`` URI."""
    server = MlflowServer(root).start()
    try:
        yield server.wait(timeout)
    finally:
        server.stop()


def _tail(p: Path, n: int = 40) -> str:
    try:
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
