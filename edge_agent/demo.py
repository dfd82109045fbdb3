"""``edge-agent demo``: a registry, simulated devices and an agent, all in one process.

::

    code = await run_demo(duration_s=10)   # None: until Ctrl-C / SIGTERM

Secure, as a deployment runs: in a temporary folder the demo makes its CA (root, issuing
intermediate, command-signing key: :mod:`cloud_registry.ca_admin`) and the registry's TLS
certificate, starts the registry with mutual TLS (plus its one-way TLS enrollment port), makes a
one-time token for its edge (as ``cloud-registry edges add``), enrolls the agent with it
(:func:`edge_agent.enrollment.enroll`: key made in the agent's identity folder), and runs the
agent over mTLS with signed commands and an AES-GCM encrypted outbox. The table's own registry
client is an integrator with a certificate of the same CA. ``insecure=True`` (``demo
--insecure``) runs it all in plain text instead, with a warning.

In a temporary folder: a registry (SQLite) on 127.0.0.1 (any free port), the example models
that have a Modbus binding published to it (with the models they are composed of), one
:class:`~protocol_adapters.modbus.simulator.ModbusSimulator` and one registered device per
model, and an :class:`~edge_agent.supervisor.EdgeAgent` (edge ``demo-edge``) polling them. A
table refreshed every ``refresh_s`` shows each device's link state, its latest values *as read
back from the registry's twin* (so the table shows that the uplink works), the values per second
it produces, and the uplink's rate, the outbox depth and the uplink lag. Everything is stopped
and the temporary folder removed at the end.

Returns 0, or 1 when the demo cannot start (no ``examples/models`` folder, a port taken...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cloud_registry.api.client import AsyncRegistryClient
from cloud_registry.ca_admin import init_registry_ca, issue_server_certificate
from cloud_registry.server.app import RegistryServer, build_server
from cloud_registry.server.context import RegistrySettings
from cloud_registry.server.tls import ServerSecurity
from cloud_registry.storage.sqlite import SqliteStorage
from edge_agent.config import load_edge_config
from edge_agent.enrollment import enroll
from edge_agent.identity_store import IdentityStore
from edge_agent.supervisor import AgentStatus, EdgeAgent
from protocol_adapters.modbus.simulator import ModbusSimulator
from security.identity import Identity, generate_key, make_csr
from security.tokens import new_token
from thing_models.composition import FolderModelSource, flatten
from thing_models.model import ThingModel

__all__ = ["EDGE_ID", "find_models_dir", "run_demo"]

EDGE_ID = "demo-edge"
_SITE = "demo-site"
_VALUES_SHOWN = 3
_log = logging.getLogger(__name__)


@dataclass
class _DemoDevice:
    device_id: str
    file: Path
    model: ThingModel  # flattened
    simulator: ModbusSimulator | None = None
    port: int = 0


def find_models_dir() -> Path | None:
    """``examples/models`` of the source tree (next to the package), else of the current
    directory; None when neither exists."""
    candidates = (
        Path(__file__).resolve().parents[1] / "examples" / "models",
        Path.cwd() / "examples" / "models",
    )
    return next((c for c in candidates if c.is_dir()), None)


def _select_models(models_dir: Path) -> tuple[list[Path], list[_DemoDevice]]:
    """The files to publish (dependencies first) and one device per Modbus model."""
    source = FolderModelSource(models_dir)  # invalid examples are left out
    raw = {str(model.ref): (file, model) for file, model in source.files.items()}
    devices: list[_DemoDevice] = []
    publish: list[Path] = []

    def add_with_dependencies(ref: str) -> None:
        file, model = raw[ref]
        deps = [c.model for c in model.components]
        if model.extends is not None:
            deps.append(model.extends)
        for dep in deps:
            for other, (_, candidate) in raw.items():
                if candidate.ref.name == dep.name and other != ref:
                    add_with_dependencies(other)
        if file not in publish:
            publish.append(file)

    for ref, (file, model) in raw.items():
        try:
            flat = flatten(model, source) if model.extends or model.components else model
        except Exception:
            continue
        if flat.bindings.modbus is None:
            continue
        add_with_dependencies(ref)
        devices.append(_DemoDevice(file.stem, file, flat))
    return publish, devices


def _edge_yaml(
    folder: Path, registry: str, models_dir: Path, devices: list[_DemoDevice], *, insecure: bool
) -> Path:
    lines = [
        f"edge_id: {EDGE_ID}",
        f"registry: {{address: {json.dumps(registry)}{', insecure: true' if insecure else ''}}}",
        f"storage: {{outbox: {json.dumps(str(folder / 'state' / 'outbox.db'))}}}",
        f"models_dir: {json.dumps(str(models_dir))}",
    ]
    if not insecure:
        lines += ["security: {identity_dir: identity, encrypt_outbox: true}"]
    lines += ["devices:"]
    for dev in devices:
        lines += [
            f"  - id: {dev.device_id}",
            f"    model: {json.dumps(str(dev.model.ref))}",
            "    protocol: modbus",
            f"    connection: {{transport: tcp, host: 127.0.0.1, port: {dev.port}, timeout: 1s}}",
            "    poll_interval: 500ms",
            "    reconnect: {min: 200ms, max: 2s}",
        ]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "edge.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class _SecureSetup:
    security: ServerSecurity
    root_pem: bytes
    console: grpc.ChannelCredentials  # the table's registry client: an integrator


def _make_ca(folder: Path) -> _SecureSetup:
    """The demo's CA, the registry's TLS certificate and an integrator certificate."""
    init_registry_ca(folder, "Demo")
    issue_server_certificate(folder, ["127.0.0.1"])
    security = ServerSecurity.from_ca_dir(folder)
    console = Identity("integrator", "demo-console")
    key = generate_key(folder / "console.key")
    cert = security.ca.issue_from_csr(make_csr(key, console), console)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    root = security.ca.root_pem
    chain = cert + b"".join(security.ca.chain_pems)
    return _SecureSetup(security, root, grpc.ssl_channel_credentials(root, key_pem, chain))


async def _enroll_edge(
    storage: SqliteStorage, server: RegistryServer, setup: _SecureSetup, identity_dir: Path
) -> str:
    """A one-time token for the edge (as ``cloud-registry edges add``), redeemed at once by
    :func:`~edge_agent.enrollment.enroll`; the identity folder's key file path."""
    token, record = new_token(EDGE_ID, _SITE, datetime.now(UTC))
    storage.security.add_edge(EDGE_ID, _SITE, record, int(time.time() * 1000))
    creds = await enroll(
        server.enroll_address,
        token,
        IdentityStore(identity_dir),
        ca_pem=setup.root_pem,
        edge_id=EDGE_ID,
    )
    return f"{identity_dir}/gen-{creds.generation}/key.pem"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 16 else text[:15] + "…"


class _Rates:
    """Per second rates of cumulative counters between two refreshes."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def rate(self, key: str, count: int) -> float:
        now = time.monotonic()
        before = self._last.get(key)
        self._last[key] = (now, count)
        if before is None or now <= before[0]:
            return 0.0
        return max(count - before[1], 0) / (now - before[0])


def _table(
    devices: list[_DemoDevice],
    status: AgentStatus,
    twins: dict[str, dict[str, Any] | None],
    rates: _Rates,
    mode: str = "",
) -> Table:
    title = f"edge-agent demo: edge {EDGE_ID}" + (f" ({mode})" if mode else "")
    table = Table(title=title, expand=True)
    table.add_column("device", no_wrap=True, min_width=15)
    table.add_column("model", overflow="ellipsis", no_wrap=True, max_width=16)
    table.add_column("state", no_wrap=True, min_width=7)
    table.add_column("latest values (twin)", no_wrap=True, overflow="ellipsis", min_width=16)
    table.add_column("val/s", justify="right", no_wrap=True)
    for dev in devices:
        dev_status = status.devices.get(dev.device_id)
        state = dev_status.diagnostics.state if dev_status is not None else "offline"
        style = {"online": "green", "degraded": "yellow"}.get(state, "red")
        reported = twins.get(dev.device_id)
        if reported is None:
            values = "(registry unreachable)"
        else:
            shown = [p.id for p in dev.model.properties if p.id in reported][:_VALUES_SHOWN]
            values = "\n".join(f"{name}={_format(reported[name])}" for name in shown) or "-"
        produced = rates.rate(dev.device_id, dev_status.messages if dev_status else 0)
        table.add_row(
            dev.device_id,
            f"{dev.model.ref.name.rsplit('/', 1)[-1]}@{dev.model.ref.version}",
            f"[{style}]{state}[/{style}]",
            values,
            f"{produced:.1f}",
        )
    uplink, outbox = status.uplink, status.outbox
    if uplink is None:
        table.caption = "uplink: starting"
    else:
        sent = rates.rate("\0uplink", uplink.messages_sent)
        lag = "-" if uplink.lag_s is None else f"{uplink.lag_s:.1f}s"
        ack = "-" if uplink.last_ack_latency_ms is None else f"{uplink.last_ack_latency_ms:.0f}ms"
        depth = outbox.rows if outbox is not None else "-"
        table.caption = (
            f"uplink {'connected' if uplink.connected else 'disconnected'}: {sent:.1f} values/s, "
            f"outbox depth {depth}, lag {lag}, ack {ack}, commands refused "
            f"{uplink.commands_refused}"
        )
    return table


async def _read_twins(
    client: AsyncRegistryClient, devices: list[_DemoDevice]
) -> dict[str, dict[str, Any] | None]:
    async def one(device_id: str) -> dict[str, Any] | None:
        try:
            twin = await client.get_twin(device_id)
        except Exception:
            return None
        return {name: state.value for name, state in twin.reported.items()}

    found = await asyncio.gather(*(one(d.device_id) for d in devices))
    return {d.device_id: twin for d, twin in zip(devices, found, strict=True)}


async def run_demo(
    *,
    duration_s: float | None = None,
    refresh_s: float = 1.0,
    console: Console | None = None,
    models_dir: Path | None = None,
    insecure: bool = False,
) -> int:
    """Run the demo (see the module doc) for ``duration_s`` seconds, else until Ctrl-C or
    SIGTERM; 0 when it ran, 1 when it could not start. ``insecure``: plain text (warned)."""
    console = console or Console()
    models_dir = models_dir or find_models_dir()
    if models_dir is None or not models_dir.is_dir():
        console.print(
            "edge-agent demo: cannot find the example models (examples/models); run it from "
            "the source tree"
        )
        return 1
    publish, devices = _select_models(models_dir)
    if not devices:
        console.print(f"edge-agent demo: no model with a Modbus binding in {models_dir}")
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[tuple[signal.Signals, Any]] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append((sig, previous))
    with tempfile.TemporaryDirectory(prefix="edge-agent-demo-") as tmp:
        folder = Path(tmp)
        storage = SqliteStorage(folder / "registry.db")
        server: RegistryServer | None = None
        client: AsyncRegistryClient | None = None
        agent: EdgeAgent | None = None
        agent_task: asyncio.Task[None] | None = None
        try:
            storage.migrate()
            settings = RegistrySettings(listen="127.0.0.1:0", enroll_listen="127.0.0.1:0")
            setup: _SecureSetup | None = None
            if insecure:
                console.print(
                    "[bold red]WARNING[/bold red]: --insecure: plain text, no authentication, "
                    "unsigned commands, outbox not encrypted (development only)"
                )
                _log.warning("demo running insecure (plain text)")
            else:
                setup = await asyncio.to_thread(_make_ca, folder / "ca")
            server = build_server(storage, settings, setup.security if setup else None)
            await server.start()
            client = AsyncRegistryClient(
                server.address, credentials=setup.console if setup else None
            )
            for file in publish:
                await client.publish_model(file.read_text(encoding="utf-8"))
            for seed, dev in enumerate(devices):
                dev.simulator = ModbusSimulator(dev.model, port=0, seed=seed, tick_ms=500)
                dev.port = await dev.simulator.start()
                await client.register_device(
                    dev.device_id, model=str(dev.model.ref), edge_id=EDGE_ID, site=_SITE
                )
            edge_folder = folder / "edge"
            config_path = _edge_yaml(
                edge_folder, server.address, models_dir, devices, insecure=insecure
            )
            mode = "INSECURE: plain text"
            if setup is not None:
                key_path = await _enroll_edge(storage, server, setup, edge_folder / "identity")
                console.print(f"enrolled {EDGE_ID}: private key {key_path} (0600)")
                mode = "mTLS, signed commands, encrypted outbox"
            config = load_edge_config(config_path)
            agent = EdgeAgent(config, uplink_options={"backoff_initial_s": 0.2})
            agent_task = asyncio.create_task(agent.run(), name="demo-agent")
            await _show(
                console, client, agent, agent_task, devices, duration_s, refresh_s, stop, mode
            )
            if agent_task.done() and agent_task.exception() is not None:
                console.print(f"edge-agent demo: the agent failed: {agent_task.exception()}")
                return 1
            return 0
        except Exception as exc:
            console.print(f"edge-agent demo: {type(exc).__name__}: {exc}")
            return 1
        finally:
            if agent is not None and agent_task is not None:
                agent.stop()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(agent_task, 15.0)
            for dev in devices:
                if dev.simulator is not None:
                    with contextlib.suppress(Exception):
                        await dev.simulator.stop()
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.stop(1.0)
            storage.close()
            for sig, previous in installed:
                loop.remove_signal_handler(sig)
                with contextlib.suppress(Exception):
                    signal.signal(sig, previous)


async def _show(
    console: Console,
    client: AsyncRegistryClient,
    agent: EdgeAgent,
    agent_task: asyncio.Task[None],
    devices: list[_DemoDevice],
    duration_s: float | None,
    refresh_s: float,
    stop: asyncio.Event,
    mode: str = "",
) -> None:
    rates = _Rates()
    deadline = None if duration_s is None else time.monotonic() + duration_s
    refresh_s = max(refresh_s, 0.05)

    async def render() -> Table:
        twins = await _read_twins(client, devices)
        return _table(devices, agent.status(), twins, rates, mode)

    with Live(await render(), console=console, auto_refresh=False) as live:
        while not stop.is_set() and not agent_task.done():
            wait = refresh_s
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await stop.wait()
            live.update(await render(), refresh=True)
    if not console.is_terminal:
        console.line()
