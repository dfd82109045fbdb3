"""A real mosquitto broker on 127.0.0.1 for tests and benchmarks.

::

    with running_mosquitto(tmp_path) as broker:      # generated config, ephemeral port
        client = aiomqtt.Client(broker.host, broker.port)
        broker.stop(); broker.start()                 # same port again (reconnect tests)

The broker logs to stderr (unbuffered), drained by a thread (lines in :attr:`Mosquitto.log`);
start returns when mosquitto says it is running, so no polling of the port. Installs nothing:
the Debian package ``mosquitto`` must be there (``apt-get install -y mosquitto``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Mosquitto", "free_port", "running_mosquitto"]

HOST = "127.0.0.1"
_START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Mosquitto:
    """One mosquitto process with a config in ``folder``, listening on ``HOST:port``."""

    def __init__(self, folder: Path, port: int | None = None, extra_config: str = "") -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
        self.binary = binary
        self.host = HOST
        self.port = port or free_port()
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} {HOST}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            + extra_config,
            encoding="utf-8",
        )
        self.log: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Start mosquitto and return once it reports running (RuntimeError otherwise)."""
        ready = threading.Event()
        process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.process = process

        def drain() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.log.append(line.rstrip())
                if " running" in line:
                    ready.set()
            ready.set()  # exited: let start() look at the exit status

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(_START_TIMEOUT_S) or process.poll() is not None:
            self.stop()
            raise RuntimeError(f"mosquitto did not start on {self.address}: {self.log[-5:]}")

    def stop(self) -> None:
        """Kill mosquitto (connections drop at once) and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def running_mosquitto(folder: Path, extra_config: str = "") -> Iterator[Mosquitto]:
    """A started broker (``extra_config``: more mosquitto.conf lines), killed at the end."""
    broker = Mosquitto(folder, extra_config=extra_config)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
