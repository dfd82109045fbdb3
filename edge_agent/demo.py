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
the demo uses published to it (with the models they are composed of), one registered device
per model, and an :class:`~edge_agent.supervisor.EdgeAgent` (edge ``demo-edge``) driving them:

- every model with a Modbus binding: a
  :class:`~protocol_adapters.modbus.simulator.ModbusSimulator` (in this process);
- the first model with a BACnet binding: a BACnet/IP simulator in its own process
  (:func:`protocol_adapters.bacnet.simulator.spawn`) on its own UDP port of 127.0.0.1, the
  agent's BACnet port another one;
- the first with an MQTT binding: an :class:`~protocol_adapters.mqtt.simulator.MqttSimulator`
  on a mosquitto broker the demo starts on 127.0.0.1 (config and log in the temporary folder),
  which also carries the agent's local stream (``local_mqtt``, with Home Assistant discovery).
  Without the ``mosquitto`` binary (Debian package ``mosquitto``) both are skipped, and the
  demo says so;
- the first with a CoAP binding: a :class:`~protocol_adapters.coap.simulator.CoapSimulator`.

A table refreshed every ``refresh_s`` shows each device, its protocol and link state, its
latest values *as read back from the registry's twin* (so the table shows that the uplink
works), the values per second it produces, and the uplink's rate, the outbox depth, the uplink
lag and the local stream. Everything (simulators, broker, agent, registry) is stopped and the
temporary folder removed at the end, on Ctrl-C, SIGTERM or after ``duration_s``.

Returns 0, or 1 when the demo cannot start (no ``examples/models`` folder, a port taken...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

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
from edge_agent.status import AgentStatus
from edge_agent.supervisor import EdgeAgent
from protocol_adapters.bacnet import simulator as bacnet_simulator
from protocol_adapters.coap.simulator import CoapSimulator
from protocol_adapters.modbus.simulator import ModbusSimulator
from protocol_adapters.mqtt.simulator import MqttSimulator
from security.identity import Identity, generate_key, make_csr
from security.tokens import new_token
from thing_models.composition import FolderModelSource, flatten
from thing_models.model import ThingModel

__all__ = ["EDGE_ID", "MOSQUITTO_PACKAGE", "find_models_dir", "run_demo"]

EDGE_ID = "demo-edge"
_SITE = "demo-site"
_VALUES_SHOWN = 3
_HOST = "127.0.0.1"
#: the Debian package of the broker the MQTT device and the local stream need
MOSQUITTO_PACKAGE = "mosquitto"
_log = logging.getLogger(__name__)

DemoProtocol = Literal["modbus", "bacnet", "mqtt", "coap"]
_ONE_OF: tuple[DemoProtocol, ...] = ("bacnet", "mqtt", "coap")  # one device each


@dataclass
class _DemoDevice:
    device_id: str
    file: Path
    model: ThingModel  # flattened
    protocol: DemoProtocol = "modbus"
    #: the edge.yaml ``connection:`` flow mapping, once its simulator runs
    connection: str = ""


def find_models_dir() -> Path | None:
    """``examples/models`` of the source tree (next to the package), else of the current
    directory; None when neither exists."""
    candidates = (
        Path(__file__).resolve().parents[1] / "examples" / "models",
        Path.cwd() / "examples" / "models",
    )
    return next((c for c in candidates if c.is_dir()), None)


def _select_models(models_dir: Path) -> tuple[list[Path], list[_DemoDevice]]:
    """The files to publish (dependencies first), one device per Modbus model and one for the
    first model (by file name) of each other protocol."""
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

    taken: set[str] = set()
    for ref, (file, model) in sorted(raw.items(), key=lambda item: item[1][0].name):
        try:
            flat = flatten(model, source) if model.extends or model.components else model
        except Exception:
            continue
        protocol: DemoProtocol
        if flat.bindings.modbus is not None:
            protocol = "modbus"
        else:
            free = [p for p in _ONE_OF if p not in taken and getattr(flat.bindings, p) is not None]
            if not free:
                continue
            protocol = free[0]
            taken.add(protocol)
        add_with_dependencies(ref)
        devices.append(_DemoDevice(file.stem, file, flat, protocol))
    return publish, devices


def _free_port(kind: socket.SocketKind) -> int:
    """A port of 127.0.0.1 (TCP or UDP) that was free a moment ago."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found is None and Path("/usr/sbin/mosquitto").is_file():
        found = "/usr/sbin/mosquitto"
    return found


class _Broker:
    """A mosquitto process on 127.0.0.1 (any free port), its config and log in ``folder``."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.port = _free_port(socket.SOCK_STREAM)
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} {_HOST}\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
            "log_type information\n",  # its "running" line, which start() waits for
            encoding="utf-8",
        )
        self.log: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"{_HOST}:{self.port}"

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start it; returns once it says it is running (RuntimeError otherwise)."""
        process = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            str(self.config),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._process = process
        said = asyncio.Event()
        ready = False

        async def drain() -> None:
            nonlocal ready
            assert process.stderr is not None
            async for raw in process.stderr:
                line = raw.decode(errors="replace").rstrip()
                self.log = [*self.log[-99:], line]
                if " running" in line:
                    ready = True
                    said.set()
            said.set()  # it exited (ready stays False)

        self._drain = asyncio.create_task(drain(), name="demo-mosquitto-log")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(said.wait(), timeout_s)
        if not ready:
            await self.stop()
            raise RuntimeError(f"mosquitto did not start on {self.address}: {self.log[-3:]}")

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain, 5.0)
            self._drain = None


async def _start_broker(
    peers: contextlib.AsyncExitStack, folder: Path, console: Console
) -> _Broker | None:
    """The demo's mosquitto (stopped by ``peers``); None, said on ``console``, without one."""
    skipped = "the MQTT device and the local MQTT stream are skipped"
    binary = _mosquitto_binary()
    if binary is None:
        console.print(
            f"mosquitto not found: {skipped} (install the Debian package {MOSQUITTO_PACKAGE}: "
            f"apt-get install -y {MOSQUITTO_PACKAGE})"
        )
        return None
    broker = _Broker(binary, folder)
    try:
        await broker.start()
    except (OSError, RuntimeError) as exc:
        console.print(f"{exc}: {skipped}")
        return None
    peers.push_async_callback(broker.stop)
    return broker


async def _start_simulators(
    peers: contextlib.AsyncExitStack, devices: list[_DemoDevice], broker: _Broker | None
) -> list[_DemoDevice]:
    """Start one simulator per device (stopped by ``peers``) and fill in its connection; the
    devices that run (MQTT ones need ``broker``)."""
    running: list[_DemoDevice] = []
    for seed, dev in enumerate(devices):
        if dev.protocol == "modbus":
            modbus = ModbusSimulator(dev.model, port=0, seed=seed, tick_ms=500)
            port = await modbus.start()
            peers.push_async_callback(modbus.stop)
            dev.connection = f"{{transport: tcp, host: {_HOST}, port: {port}, timeout: 1s}}"
        elif dev.protocol == "bacnet":
            binding = dev.model.bindings.bacnet
            instance = (binding.device_instance if binding else None) or 1001
            port = _free_port(socket.SOCK_DGRAM)
            proc = await asyncio.to_thread(
                bacnet_simulator.spawn, dev.file, f"{_HOST}:{port}", instance, "--interval", "0.5"
            )
            peers.push_async_callback(asyncio.to_thread, bacnet_simulator.stop, proc)
            local = _free_port(socket.SOCK_DGRAM)
            dev.connection = (
                f"{{address: {json.dumps(f'{_HOST}:{port}')}, device_instance: {instance}, "
                f"local_address: {json.dumps(f'{_HOST}:{local}')}, timeout: 1s}}"
            )
        elif dev.protocol == "mqtt":
            if broker is None:
                continue
            mqtt = MqttSimulator(dev.model, _HOST, broker.port, dev.device_id, seed=seed)
            await mqtt.start()
            peers.push_async_callback(mqtt.stop)
            dev.connection = f"{{host: {_HOST}, port: {broker.port}, timeout: 2s}}"
        else:
            coap = CoapSimulator(dev.model, port=0, host=_HOST, seed=seed, tick_ms=500)
            port = await coap.start()
            peers.push_async_callback(coap.stop)
            dev.connection = f"{{host: {_HOST}, port: {port}, timeout: 2s}}"
        running.append(dev)
    return running


def _edge_yaml(
    folder: Path,
    registry: str,
    models_dir: Path,
    devices: list[_DemoDevice],
    *,
    insecure: bool,
    local_mqtt: str | None = None,
) -> Path:
    lines = [
        f"edge_id: {EDGE_ID}",
        f"registry: {{address: {json.dumps(registry)}{', insecure: true' if insecure else ''}}}",
        f"storage: {{outbox: {json.dumps(str(folder / 'state' / 'outbox.db'))}}}",
        f"models_dir: {json.dumps(str(models_dir))}",
    ]
    if not insecure:
        lines += ["security: {identity_dir: identity, encrypt_outbox: true}"]
    if local_mqtt is not None:
        lines += [f"local_mqtt: {{broker: {json.dumps(local_mqtt)}, home_assistant: true}}"]
    lines += ["devices:"]
    for dev in devices:
        lines += [
            f"  - id: {dev.device_id}",
            f"    model: {json.dumps(str(dev.model.ref))}",
            f"    protocol: {dev.protocol}",
            f"    connection: {dev.connection}",
        ]
        if dev.protocol != "mqtt":  # MQTT devices push: nothing to poll
            lines += [f"    poll_interval: {'500ms' if dev.protocol == 'modbus' else '1s'}"]
        lines += ["    reconnect: {min: 200ms, max: 2s}"]
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
    table.add_column("device", no_wrap=True, min_width=20)
    table.add_column("protocol", no_wrap=True, min_width=8)
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
            dev.protocol,
            f"{dev.model.ref.name.rsplit('/', 1)[-1]}@{dev.model.ref.version}",
            f"[{style}]{state}[/{style}]",
            values,
            f"{produced:.1f}",
        )
    uplink, outbox = status.uplink, status.outbox
    if uplink is None:
        caption = "uplink: starting"
    else:
        sent = rates.rate("\0uplink", uplink.messages_sent)
        lag = "-" if uplink.lag_s is None else f"{uplink.lag_s:.1f}s"
        ack = "-" if uplink.last_ack_latency_ms is None else f"{uplink.last_ack_latency_ms:.0f}ms"
        depth = outbox.rows if outbox is not None else "-"
        caption = (
            f"uplink {'connected' if uplink.connected else 'disconnected'}: {sent:.1f} values/s, "
            f"outbox depth {depth}, lag {lag}, ack {ack}, commands refused "
            f"{uplink.commands_refused}"
        )
    local = status.local_stream
    if local is not None:
        link = "connected" if local.connected else "disconnected"
        caption += (
            f"; local MQTT {local.broker} {link} (Home Assistant discovery): "
            f"{local.published} published, {local.dropped} dropped"
        )
    table.caption = caption
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
        console.print(
            f"edge-agent demo: no model with a Modbus, BACnet, MQTT or CoAP binding in {models_dir}"
        )
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
        peers = contextlib.AsyncExitStack()  # broker and simulators
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
            broker = await _start_broker(peers, folder / "mosquitto", console)
            devices = await _start_simulators(peers, devices, broker)
            for dev in devices:
                await client.register_device(
                    dev.device_id, model=str(dev.model.ref), edge_id=EDGE_ID, site=_SITE
                )
            edge_folder = folder / "edge"
            config_path = _edge_yaml(
                edge_folder,
                server.address,
                models_dir,
                devices,
                insecure=insecure,
                local_mqtt=broker.address if broker is not None else None,
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
            with contextlib.suppress(Exception):
                await peers.aclose()
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
