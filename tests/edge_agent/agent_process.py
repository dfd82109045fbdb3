"""Real parts for the edge agent's proof tests: a counter model, an edge configuration, the
agent as a child process (``edge-agent run --config``), a registry child process with a client,
Modbus peers on a background event loop, and polling waits with deadlines.

::

    models = write_counter_model(tmp_path / "models")
    with RegistryHandle(tmp_path / "registry.db") as registry, PeerLoop() as peers:
        registry.setup(models, ["counter-1"])
        peer = peers.start(Behaviour.COUNTER)
        config = write_edge_config(
            tmp_path, registry.target, {"counter-1": peer.port}, models_dir=models
        )
        with AgentProcess(config) as agent:
            wait_for(lambda: len(registry.counter_values("counter-1")) > 10, "first values")
            agent.kill()

The counter model has one property, ``counter`` (uint32 in holding registers 0-1), reported on
every poll (``on_change: false``): a device whose counter grows by one per read
(:class:`~tests.edge_agent.faulty_modbus_peer.ModbusPeer`) makes every lost or repeated value
visible in the registry's history.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from cloud_registry.api.client import RegistryClient
from cloud_registry.api.types import Event, HistoryPoint
from tests.cloud_registry.registry_process import RegistryProcess
from tests.edge_agent.faulty_modbus_peer import Behaviour, ModbusPeer

__all__ = [
    "COUNTER_MODEL_REF",
    "EDGE_ID",
    "AgentProcess",
    "PeerLoop",
    "RegistryHandle",
    "until",
    "wait_for",
    "wait_for_async",
    "write_counter_model",
    "write_edge_config",
]

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
EDGE_ID = "edge-1"
COUNTER_MODEL_REF = "community.test/counter@1.0.0"
COUNTER_MODEL = """\
model: community.test/counter
version: "1.0.0"
title: Test counter
properties:
  - {id: counter, title: Reads served, type: int64, min: 0, required: true}
bindings:
  reporting:
    default: {poll_interval: 1s, on_change: false}
  modbus:
    unit_id: 1
    addressing: zero-based
    points:
      - {property: counter, table: holding_register, address: 0, type: uint32}
"""


def write_counter_model(folder: Path) -> Path:
    """The counter model in ``folder`` (created); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "counter.yaml").write_text(COUNTER_MODEL, encoding="utf-8")
    return folder


def write_edge_config(
    folder: Path,
    registry: str,
    devices: Mapping[str, int],
    *,
    models_dir: Path,
    poll: str = "50ms",
    timeout: str = "300ms",
    reconnect: tuple[str, str] = ("50ms", "400ms"),
) -> Path:
    """``folder/edge.yaml``: every device a counter on ``127.0.0.1:<port>``; the outbox is
    ``folder/state/outbox.db``."""
    lines = [
        f"edge_id: {EDGE_ID}",
        f'registry: {{address: "{registry}", insecure: true}}',
        "storage: {outbox: state/outbox.db}",
        f"models_dir: {models_dir}",
        "devices:",
    ]
    for device_id, port in devices.items():
        lines += [
            f"  - id: {device_id}",
            f"    model: {COUNTER_MODEL_REF}",
            "    protocol: modbus",
            f"    connection: {{transport: tcp, host: 127.0.0.1, port: {port}, "
            f"timeout: {timeout}}}",
            f"    poll_interval: {poll}",
            f"    reconnect: {{min: {reconnect[0]}, max: {reconnect[1]}}}",
        ]
    path = folder / "edge.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``predicate`` every 50 ms until it holds; AssertionError naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout:g} s: {what}")
        time.sleep(0.05)


async def wait_for_async(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """:func:`wait_for` for coroutines (yields to the loop between checks)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout:g} s: {what}")
        await asyncio.sleep(0.05)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    """Await ``check()`` every 100 ms until it is true; AssertionError naming ``what`` after
    ``timeout`` seconds (for checks that call the registry)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout:g} s: {what}")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- the agent


class AgentProcess:
    """``edge-agent run --config CONFIG`` as a child process; its log goes to a file next to
    the config (``agent-<n>.log``, read by :meth:`log`)."""

    _started = 0

    def __init__(self, config: Path, *, start_timeout: float = 20.0) -> None:
        AgentProcess._started += 1
        self.log_path = config.parent / f"agent-{AgentProcess._started}.log"
        script = Path(sys.executable).parent / "edge-agent"
        command = (
            [str(script)] if script.exists() else [sys.executable, "-m", "edge_agent.cli"]
        ) + ["run", "--config", str(config), "--log-level", "INFO"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), env=env
            )
        try:
            wait_for(
                lambda: f"edge {EDGE_ID}" in self.log() or self.proc.poll() is not None,
                "the agent's start line",
                start_timeout,
            )
            if self.proc.poll() is not None:
                raise AssertionError(f"the agent exited at start:\n{self.log()}")
        except BaseException:
            self.kill()
            raise

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM; the exit status (SIGKILL after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"the agent ignored SIGTERM:\n{self.log()}") from None
        return int(self.proc.returncode)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


# --------------------------------------------------------------------------- the registry


class RegistryHandle:
    """A registry child process over ``db`` with a blocking client; :meth:`kill` and
    :meth:`restart` (same port, same database) for outages."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.process: RegistryProcess | None = RegistryProcess(db)
        self.port = self.process.port
        self.target = self.process.target
        self.client = RegistryClient(self.target, timeout=10.0)

    def setup(self, models_dir: Path, device_ids: Iterable[str]) -> None:
        """Publish every model file of ``models_dir``; register the devices as counters of
        this edge."""
        for path in sorted(models_dir.glob("*.yaml")):
            self.client.publish_model(path.read_text(encoding="utf-8"))
        for device_id in device_ids:
            self.client.register_device(
                device_id, model=COUNTER_MODEL_REF, edge_id=EDGE_ID, site="site-a"
            )

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the registry holds its connections but answers nothing."""
        assert self.process is not None
        os.kill(self.process.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.process is not None
        os.kill(self.process.proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        """A new process on the same port over the same database."""
        assert self.process is None, "kill() first"
        self.process = RegistryProcess(self.db, "--port", str(self.port))

    def history(self, device_id: str, prop: str = "counter") -> list[HistoryPoint]:
        """Every raw history point of ``prop``, oldest first (paged by time)."""
        points: list[HistoryPoint] = []
        from_ms = 0
        while True:
            page = self.client.get_history(device_id, prop, from_ms=from_ms, limit=10000)
            points.extend(page.points)
            if not page.truncated or not page.points:
                return points
            # the next page starts after the last timestamp; points sharing it are re-read
            last = page.points[-1].ts_ms
            while points and points[-1].ts_ms == last:
                points.pop()
            from_ms = last

    def counter_values(self, device_id: str) -> list[int]:
        """The good ``counter`` values in the history, oldest first."""
        return [
            int(p.value)
            for p in self.history(device_id)
            if p.quality == "good" and p.value is not None
        ]

    def events(self, device_id: str) -> list[Event]:
        return list(self.client.iter_events(device_id))

    def close(self) -> None:
        self.client.close()
        if self.process is not None:
            self.resume()  # in case a test failed while it was paused
            self.process.stop()
            self.process = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- Modbus peers


class PeerLoop:
    """An event loop on a background thread serving :class:`ModbusPeer` s (for tests whose
    agent is a child process and whose main thread stays synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="peers", daemon=True)
        self._thread.start()
        self.peers: list[ModbusPeer] = []

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, behaviour: Behaviour = Behaviour.COUNTER) -> ModbusPeer:
        peer = ModbusPeer(behaviour)
        self.call(peer.start())
        self.peers.append(peer)
        return peer

    def set_behaviour(self, peer: ModbusPeer, behaviour: Behaviour) -> int:
        """Switch ``peer`` on the loop's thread; returns the counter value served before."""

        async def switch() -> int:
            peer.behaviour = behaviour
            return peer.served

        return self.call(switch())

    def close(self) -> None:
        for peer in self.peers:
            self.call(peer.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
