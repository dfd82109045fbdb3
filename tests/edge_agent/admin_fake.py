"""An in-memory :class:`~edge_agent.admin.AgentControl` for the admin and metrics tests, a
helper that runs an :class:`~edge_agent.admin.AdminServer` on a thread of its own (for code
that runs its own event loop, like the CLI), and a real agent polling a simulated meter."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from edge_agent.admin import AdminServer
from edge_agent.config import load_edge_config
from edge_agent.errors import AgentCommandError
from edge_agent.outbox import DropCount, OutboxStats
from edge_agent.supervisor import AgentStatus, DeviceStatus, EdgeAgent, PollObserver
from edge_agent.uplink import UplinkStats
from protocol_adapters.base import DiagnosticState, Reading
from protocol_adapters.modbus.simulator import ModbusSimulator
from thing_models.messages import Message, MessageKind, Quality, new_message_id
from thing_models.yaml_format import load_model_file

MODEL = "community.energy/meter-3p@1.0.0"


def device_status(device_id: str, state: str = "online", **changes: Any) -> DeviceStatus:
    diagnostics = DiagnosticState(
        state=state,  # type: ignore[arg-type]
        requests=changes.pop("requests", 100),
        errors=changes.pop("errors", 7),
        timeouts=changes.pop("timeouts", 3),
        exception_codes=changes.pop("exception_codes", {2: 1, 4: 2}),
        last_error=changes.pop("diag_error", ""),
    )
    fields: dict[str, Any] = {
        "device_id": device_id,
        "model": MODEL,
        "protocol": "modbus",
        "endpoint": "127.0.0.1:5020",
        "phase": "polling",
        "diagnostics": diagnostics,
        "poll_interval_s": 0.5,
        "polls": 40,
        "messages": 80,
        "connect_attempts": 1,
        "task_errors": 0,
        "last_error": "",
    }
    fields.update(changes)
    return DeviceStatus(**fields)


def agent_status(rows: int = 12) -> AgentStatus:
    return AgentStatus(
        edge_id="edge-1",
        running=True,
        devices={
            "meter-1": device_status("meter-1"),
            "meter-[2]": device_status(
                "meter-[2]", "offline", phase="backoff", last_error="ModbusTimeoutError: 1 s"
            ),
        },
        outbox=OutboxStats(
            rows=rows,
            bytes=rows * 100,
            oldest_age_s=2.5 if rows else None,
            in_flight_batches=1,
            last_sequence=9,
            dropped_telemetry_rows=5,
            dropped_kept_rows=0,
            dropped=(DropCount("meter-1", "size", "telemetry", 5, 500),),
            quarantined=0,
        ),
        uplink=UplinkStats(
            connected=True,
            sessions=1,
            reconnects=2,
            in_flight=1,
            batches_sent=10,
            messages_sent=1000,
            batches_resent=0,
            batches_acked=9,
            messages_stored=900,
            duplicates=0,
            rejected=0,
            commands=1,
            last_ack_ms=1_700_000_000_000,
            last_ack_latency_ms=4.0,
            backlog_rows=rows,
            lag_s=2.5 if rows else None,
            last_error="",
            commands_refused=2,
        ),
        queued=3,
        tail_dropped=4,
    )


def message(device_id: str, n: int, pad: int = 0) -> Message:
    params: dict[str, Any] = {"n": n}
    if pad:
        params["pad"] = "x" * pad
    return Message(
        id=new_message_id(),
        kind=MessageKind.PROPERTY_REPORT,
        model=MODEL,
        device_id=device_id,
        ts_ms=1_700_000_000_000 + n,
        params=params,
    )


class FakeControl:
    """Devices ``meter-1`` (property ``voltage``, service ``reset``) and a status to report."""

    def __init__(self) -> None:
        self.current = agent_status()
        self.written: list[tuple[str, str, object]] = []
        self.queues: list[asyncio.Queue[Message]] = []
        self.dropped = 0
        self.subscribed = asyncio.Event()
        self.unsubscribed = asyncio.Event()
        self.fail_status = False
        #: outbox rows the next status() calls report, one each (the last one stays)
        self.rows_plan: list[int] = []

    def status(self) -> AgentStatus:
        if self.fail_status:
            raise RuntimeError("status exploded")
        if self.rows_plan:
            rows = self.rows_plan.pop(0) if len(self.rows_plan) > 1 else self.rows_plan[0]
            return agent_status(rows)
        return self.current

    def _device(self, device_id: str) -> None:
        if device_id != "meter-1":
            raise AgentCommandError(f"unknown device {device_id!r}")

    async def read_property(self, device_id: str, property_id: str) -> tuple[int, Reading]:
        self._device(device_id)
        if property_id == "nan":
            return 5, Reading(float("nan"), Quality.BAD, "sentinel")
        if property_id != "voltage":
            raise AgentCommandError(f"device {device_id}: unknown property {property_id!r}")
        return 1_700_000_000_123, Reading(230.5, Quality.GOOD, "")

    async def write_property(self, device_id: str, property_id: str, value: object) -> object:
        self._device(device_id)
        self.written.append((device_id, property_id, value))
        return value

    async def invoke_service(
        self, device_id: str, service_id: str, args: dict[str, object]
    ) -> dict[str, object]:
        self._device(device_id)
        if service_id != "reset":
            raise AgentCommandError(f"device {device_id}: unknown service {service_id!r}")
        return {"done": True, "args": args}

    @contextlib.asynccontextmanager
    async def subscribe(self, max_queue: int = 1000) -> AsyncIterator[AsyncIterator[Message]]:
        queue: asyncio.Queue[Message] = asyncio.Queue(max_queue)
        self.queues.append(queue)
        self.subscribed.set()

        async def messages() -> AsyncIterator[Message]:
            while True:
                yield await queue.get()

        try:
            yield messages()
        finally:
            self.queues.remove(queue)
            self.unsubscribed.set()

    def publish(self, msg: Message) -> None:
        """Like the agent's outbox hook: never blocks, drops for a full subscriber."""
        for queue in self.queues:
            try:
                queue.put_nowait(msg)
            except asyncio.QueueFull:
                self.dropped += 1


@contextlib.contextmanager
def server_thread(
    path: Path, **options: Any
) -> Iterator[tuple[FakeControl, asyncio.AbstractEventLoop]]:
    """An AdminServer over a FakeControl on its own event loop thread, for the CLI tests."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        control = FakeControl()
        server = AdminServer(control, path, **options)
        await server.start()
        holder["control"], holder["stop"] = control, asyncio.Event()
        started.set()
        await holder["stop"].wait()
        await server.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the admin server did not start")
    try:
        yield holder["control"], loop
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
        loop.close()


ROOT = Path(__file__).resolve().parents[2]
METER_FILE = ROOT / "examples" / "models" / "energy-meter-3p.yaml"


@contextlib.asynccontextmanager
async def running_agent(
    tmp_path: Path, observer: PollObserver | None = None
) -> AsyncIterator[tuple[EdgeAgent, ModbusSimulator]]:
    """A real EdgeAgent polling one simulated meter (``meter-1``) every 100 ms; its registry
    address is a closed loopback port, so everything stays in the outbox."""
    model = load_model_file(METER_FILE)
    simulator = ModbusSimulator(model, seed=1, tick_ms=50)
    port = await simulator.start()
    config_file = tmp_path / "edge.yaml"
    config_file.write_text(
        f"""edge_id: edge-1
registry: {{address: "127.0.0.1:1", insecure: true}}
storage: {{outbox: state/outbox.db}}
models_dir: {METER_FILE.parent}
admin_socket: admin.sock
devices:
  - id: meter-1
    model: {MODEL}
    protocol: modbus
    connection: {{transport: tcp, host: 127.0.0.1, port: {port}, timeout: 500ms}}
    poll_interval: 100ms
    reconnect: {{min: 100ms, max: 400ms}}
""",
        encoding="utf-8",
    )
    agent = EdgeAgent(
        load_edge_config(config_file),
        uplink_options={"backoff_initial_s": 0.2, "backoff_max_s": 0.5},
        observer=observer,
    )
    task = asyncio.create_task(agent.run())
    try:
        for _ in range(400):  # until the first poll is done (or the agent died)
            if task.done() or agent.status().devices["meter-1"].polls > 0:
                break
            await asyncio.sleep(0.025)
        if task.done():
            await task
        yield agent, simulator
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        await simulator.stop()
