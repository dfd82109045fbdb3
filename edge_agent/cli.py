"""``edge-agent``: the edge agent's command line.

``run --config edge.yaml``: the agent (:class:`~edge_agent.supervisor.EdgeAgent`) until SIGTERM
or Ctrl-C; configuration errors are printed with their ``file:line:column``.

``enroll --registry ADDR --token TOKEN --ca-file ROOT.pem (--config edge.yaml | --identity-dir
DIR)``: make this edge's private key (0600, it never leaves the box), send a CSR with the
one-time token over one-way TLS trusting the given root, and store the certificate, chain,
trust roots and command keys in the identity folder (:mod:`edge_agent.enrollment`).

``simulate modbus``: a Modbus TCP device whose registers follow a model's binding, for
installers checking a model before going on site (and for tests).

``demo [--duration SECONDS] [--insecure]``: a registry, simulated devices of the example models
and an agent in one process (secure: its own CA, enrollment, mTLS, signed commands, encrypted
outbox; ``--insecure``: plain text, warned), with a live table of the devices, their values and
the uplink (:mod:`edge_agent.demo`). The admin commands arrive with the rest of the edge-agent
issue.

Exit codes: 0 success (``run``: stopped by a signal), 1 the configuration or model is invalid or
the agent / device cannot start (``enroll``: refused, unreachable, loose permissions), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.admin_cli import ADMIN_COMMANDS, add_admin_commands, run_admin_command
from edge_agent.secret_store import add_secret_commands, run_secret_command
from edge_agent.signals import stop_signals
from thing_models.composition import FolderModelSource, flatten
from thing_models.errors import ThingModelError
from thing_models.model import ThingModel
from thing_models.yaml_format import load_model_file

if TYPE_CHECKING:
    from edge_agent.config import EdgeConfig

__all__ = ["main"]


def _version() -> str:
    try:
        return version("community-iot-edge")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="The community edge agent: enroll it, run it, talk to a running one (status, "
        "devices, read, write, invoke, tail, drain over its admin socket), simulate or discover "
        "devices, or run the demo.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the agent",
        description="Poll the configured devices and sync with the registry until Ctrl-C or "
        "SIGTERM.",
    )
    run.add_argument("--config", type=Path, required=True, help="edge configuration (YAML)")
    run.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level (default INFO)",
    )
    enroll = sub.add_parser(
        "enroll",
        help="enroll this edge with the registry (one-time token)",
        description="Make this edge's private key (it never leaves the box), send a CSR with "
        "the one-time bootstrap token over TLS trusting --ca-file, and store the certificate, "
        "chain, trust roots and the registry's command keys in the identity folder.",
    )
    enroll.add_argument(
        "--registry", help="registry enrollment address host:port (default: the config's)"
    )
    enroll.add_argument("--token", required=True, help="the token of 'cloud-registry edges add'")
    where = enroll.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="edge configuration (its security section)")
    where.add_argument("--identity-dir", type=Path, help="the identity folder to fill")
    enroll.add_argument(
        "--ca-file",
        type=Path,
        help="the registry's root certificate (PEM), trusted at first contact "
        "(default: the config's registry.ca)",
    )
    enroll.add_argument("--timeout", type=float, default=15.0, help="seconds (default 15)")
    demo = sub.add_parser(
        "demo",
        help="a registry, simulated devices and an agent in one process",
        description="Start a registry (SQLite in a temporary folder), simulated devices of the "
        "example models and an agent; show the devices, their live values (read back from the "
        "registry) and the uplink until Ctrl-C or SIGTERM (or --duration).",
    )
    demo.add_argument(
        "--duration", type=float, default=None, help="stop after SECONDS (default: Ctrl-C)"
    )
    demo.add_argument(
        "--refresh", type=float, default=1.0, help="table refresh period in seconds (default 1)"
    )
    demo.add_argument(
        "--insecure",
        action="store_true",
        help="plain text: no CA, no enrollment, unsigned commands (development only; warns)",
    )
    simulate = sub.add_parser("simulate", help="run a simulated device of a model")
    protocols = simulate.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    modbus = protocols.add_parser(
        "modbus",
        help="a Modbus TCP device following the model's modbus binding",
        description="Serve a Modbus TCP device whose registers follow the model's binding with "
        "plausible changing values; writes to writable points are applied. Runs until "
        "Ctrl-C or SIGTERM.",
    )
    modbus.add_argument("--model", type=Path, required=True, help="model file (YAML)")
    modbus.add_argument("--port", type=int, default=5020, help="TCP port (0: any free port)")
    modbus.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    modbus.add_argument(
        "--tick-ms", type=int, default=1000, help="how often values move (milliseconds)"
    )
    modbus.add_argument("--seed", type=int, default=0, help="random seed of the values")
    add_admin_commands(sub)
    add_secret_commands(sub)
    discover = sub.add_parser("discover", help="find devices on a network and draft their models")
    discover_protocols = discover.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    for name in _OTHER_PROTOCOLS:
        module = _protocol_module(name)
        if module is None:
            continue
        add_simulate = getattr(module, "add_simulate_command", None)
        if add_simulate is not None:
            add_simulate(protocols)
        add_discover = getattr(module, "add_discover_command", None)
        if add_discover is not None:
            add_discover(discover_protocols)
    return parser


_OTHER_PROTOCOLS = ("bacnet", "mqtt", "coap")


def _protocol_module(name: str) -> Any:
    """``edge_agent.protocols.<name>`` (None while that protocol is not part of this build)."""
    try:
        return importlib.import_module(f"edge_agent.protocols.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"edge_agent.protocols.{name}":
            raise
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ADMIN_COMMANDS:
        return run_admin_command(args)
    if args.command == "secret":
        return run_secret_command(args)
    if args.command == "run":
        return _run(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "enroll":
        return _enroll(args)
    if args.command == "discover":
        module = _protocol_module(args.protocol)
        try:
            return int(asyncio.run(module.discover(args)))
        except KeyboardInterrupt:
            return 130
    try:
        model = load_model_file(args.model)
        if model.extends is not None or model.components:
            model = flatten(model, FolderModelSource(args.model.parent))
    except ThingModelError as exc:
        print(exc, file=sys.stderr)
        return 1
    if getattr(model.bindings, args.protocol) is None:
        print(f"{args.model}: error: the model has no {args.protocol} binding", file=sys.stderr)
        return 1
    if args.protocol != "modbus":
        module = _protocol_module(args.protocol)
        try:
            return int(asyncio.run(module.simulate(model, args)))
        except KeyboardInterrupt:
            return 0
    if not 0 <= args.port <= 65535 or args.tick_ms <= 0:
        print(
            "edge-agent simulate modbus: --port must be 0..65535, --tick-ms > 0",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(_simulate_modbus(model, args))
    except KeyboardInterrupt:
        return 0


async def _simulate_modbus(model: ThingModel, args: argparse.Namespace) -> int:
    from protocol_adapters.modbus.simulator import ModbusSimulator

    simulator = ModbusSimulator(
        model,
        port=args.port,
        host=args.host,
        seed=args.seed,
        tick_ms=args.tick_ms,
    )
    async with stop_signals() as stop:
        try:
            port = await simulator.start()
        except OSError as exc:
            print(
                f"edge-agent simulate modbus: cannot listen on {args.host}:{args.port}: {exc}",
                file=sys.stderr,
            )
            return 1
        print(f"simulating {model.ref} on {args.host}:{port} (Modbus TCP)", flush=True)
        await stop.wait()
    await simulator.stop()
    print("stopped", flush=True)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from edge_agent.demo import run_demo

    if (args.duration is not None and args.duration <= 0) or args.refresh <= 0:
        print("edge-agent demo: --duration and --refresh must be > 0", file=sys.stderr)
        return 2
    logging.basicConfig(level="ERROR", format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(
            run_demo(duration_s=args.duration, refresh_s=args.refresh, insecure=args.insecure)
        )
    except KeyboardInterrupt:
        return 0


def _enroll(args: argparse.Namespace) -> int:
    from edge_agent.config import load_edge_config
    from edge_agent.enrollment import enroll
    from edge_agent.errors import AgentError
    from edge_agent.identity_store import IdentityStore

    name = "edge-agent enroll"
    registry, ca_file, edge_id = args.registry, args.ca_file, None
    folder = args.identity_dir
    if args.config is not None:
        try:
            config = load_edge_config(args.config)
        except ThingModelError as exc:
            print(exc, file=sys.stderr)
            return 1
        if config.security is None:  # pragma: no cover - a loaded file always has one
            print(f"{name}: {args.config} has no security section", file=sys.stderr)
            return 1
        folder = config.security.identity_dir
        registry = registry or config.registry.address
        ca_file = ca_file or config.registry.ca
        edge_id = config.edge_id
    if not registry or ca_file is None:
        print(f"{name}: need --registry and --ca-file (or a config naming them)", file=sys.stderr)
        return 2
    try:
        ca_pem = Path(ca_file).read_bytes()
    except OSError as exc:
        print(f"{name}: cannot read the CA file {ca_file}: {exc.strerror}", file=sys.stderr)
        return 1
    store = IdentityStore(folder)
    try:
        creds = asyncio.run(
            enroll(
                registry,
                args.token,
                store,
                ca_pem=ca_pem,
                edge_id=edge_id,
                timeout_s=args.timeout,
            )
        )
    except AgentError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    gen = folder / f"gen-{creds.generation}"
    print(f"enrolled as edge {creds.edge_id!r} (site {creds.site!r}) with {registry}")
    print(f"private key: {gen / 'key.pem'} (mode 0600; it never leaves this box)")
    print(f"certificate: {gen / 'cert.pem'} (valid until {creds.not_after.isoformat()})")
    print(f"chain, trust roots and {len(creds.command_keys)} command key(s): {gen}")
    print("the agent renews the certificate by itself at two thirds of its lifetime")
    return 0


def _run(args: argparse.Namespace) -> int:
    from edge_agent.config import load_edge_config

    try:
        config = load_edge_config(args.config)
    except ThingModelError as exc:
        print(exc, file=sys.stderr)
        return 1
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(_run_agent(config))
    except KeyboardInterrupt:
        return 0


async def _run_agent(config: EdgeConfig) -> int:
    from edge_agent.supervisor import EdgeAgent

    agent = EdgeAgent(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, agent.stop)
    try:
        await agent.run()
    except Exception as exc:
        print(f"edge-agent run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
