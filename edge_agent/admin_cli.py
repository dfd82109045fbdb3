"""``edge-agent`` commands against a running agent, through its admin socket.

``status``, ``devices``, ``read DEVICE PROP``, ``write DEVICE PROP VALUE``,
``invoke DEVICE SERVICE [ARGS]``, ``tail [--device D] [--count N]`` and
``drain [--timeout S]`` (a progress bar while the outbox drains to the registry). Each takes
``--socket PATH`` (default: ``admin_socket`` of ``--config edge.yaml``, else
:data:`DEFAULT_SOCKET`) and ``--json`` (machine-readable output instead of tables).

VALUE and ARGS values are JSON literals when they parse (``21.5``, ``true``, ``"on"``,
``[1,2]``), else strings. ARGS are ``key=value`` words or a single JSON object.

Exit codes: 0 success, 1 the agent refused or is not running (or ``drain`` timed out),
2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from edge_agent.admin import AdminError
from edge_agent.admin_client import AdminClient

__all__ = [
    "ADMIN_COMMANDS",
    "DEFAULT_SOCKET",
    "add_admin_commands",
    "parse_args_words",
    "parse_value",
    "run_admin_command",
]

DEFAULT_SOCKET = Path("/run/edge-agent/admin.sock")
ADMIN_COMMANDS = frozenset({"status", "devices", "read", "write", "invoke", "tail", "drain"})


class _UsageError(Exception):
    pass


def add_admin_commands(subparsers: Any) -> None:
    """Add the admin commands to ``edge-agent``'s ``add_subparsers()`` object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket", type=Path, default=None, help=f"admin socket (default {DEFAULT_SOCKET})"
    )
    common.add_argument(
        "--config", type=Path, default=None, help="take the admin socket from this edge.yaml"
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")
    common.add_argument(
        "--request-timeout", type=float, default=30.0, help="seconds to wait for each reply"
    )

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(
            name, help=help_text, description=help_text, parents=[common]
        )
        return parser

    add("status", "the running agent: connections, devices, outbox and uplink")
    add("devices", "the running agent's devices")
    read = add("read", "read one property of a device now")
    read.add_argument("device")
    read.add_argument("property")
    write = add("write", "write one property of a device (VALUE: JSON literal, else a string)")
    write.add_argument("device")
    write.add_argument("property")
    write.add_argument("value")
    invoke = add("invoke", "invoke a service of a device (ARGS: key=value words or JSON object)")
    invoke.add_argument("device")
    invoke.add_argument("service")
    invoke.add_argument("args", nargs="*", metavar="ARGS")
    tail = add("tail", "print live thing-model messages (JSON lines) until Ctrl-C")
    tail.add_argument("--device", default=None, help="only this device's messages")
    tail.add_argument("--count", type=int, default=None, help="stop after N messages")
    drain = add("drain", "wait, with a progress bar, until the outbox is empty")
    drain.add_argument("--timeout", type=float, default=300.0, help="give up after SECONDS")
    drain.add_argument("--interval", type=float, default=0.25, help="poll period in seconds")


def parse_value(text: str) -> object:
    """A JSON literal when ``text`` parses as one (NaN and Infinity do not), else ``text``."""
    try:
        value: object = json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text
    return value


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_args_words(words: list[str]) -> dict[str, object]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; a single JSON object word is taken whole."""
    if len(words) == 1 and words[0].lstrip().startswith("{"):
        try:
            obj = json.loads(words[0], parse_constant=_no_constant)
        except ValueError as exc:
            raise _UsageError(f"ARGS: not a JSON object: {exc}") from exc
        if not isinstance(obj, dict):
            raise _UsageError("ARGS: not a JSON object")
        return obj
    args: dict[str, object] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise _UsageError(f"ARGS: {word!r} is not key=value")
        if key in args:
            raise _UsageError(f"ARGS: {key!r} given twice")
        args[key] = parse_value(value)
    return args


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    if args.config is not None:
        from edge_agent.config import load_edge_config

        return load_edge_config(args.config).admin_socket
    return DEFAULT_SOCKET


def run_admin_command(args: argparse.Namespace, *, console: Console | None = None) -> int:
    """Run the admin command named by ``args.command``; the exit code."""
    from thing_models.errors import ThingModelError

    command = args.command
    out = console or Console(highlight=False, soft_wrap=True)
    try:
        _check_usage(args)
        path = _socket_path(args)
        return asyncio.run(_run(args, path, out))
    except _UsageError as exc:
        print(f"edge-agent {command}: {exc}", file=sys.stderr)
        return 2
    except ThingModelError as exc:
        print(exc, file=sys.stderr)
        return 1
    except AdminError as exc:
        print(f"edge-agent {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0 if command == "tail" else 1


def _check_usage(args: argparse.Namespace) -> None:
    if args.request_timeout <= 0:
        raise _UsageError("--request-timeout must be > 0")
    if args.command == "tail" and args.count is not None and args.count <= 0:
        raise _UsageError("--count must be > 0")
    if args.command == "drain" and (args.timeout <= 0 or args.interval <= 0):
        raise _UsageError("--timeout and --interval must be > 0")
    if args.command == "invoke":
        args.args = parse_args_words(args.args)


async def _run(args: argparse.Namespace, path: Path, out: Console) -> int:
    command = args.command
    render: Callable[[Any], list[Table]]
    async with AdminClient(path, timeout_s=args.request_timeout) as client:
        if command == "tail":
            return await _tail(client, args)
        if command == "drain":
            return await _drain(client, args, out)
        if command == "status":
            result = await client.request("status")
            render = _status_tables
        elif command == "devices":
            result = await client.request("devices")
            render = _devices_table
        elif command == "read":
            result = await client.request("read", device=args.device, property=args.property)
            render = _read_table
        elif command == "write":
            value = parse_value(args.value)
            result = await client.request(
                "write", device=args.device, property=args.property, value=value
            )
            render = _write_table
        elif command == "invoke":
            result = await client.request(
                "invoke", device=args.device, service=args.service, args=args.args
            )
            render = _invoke_table
        else:  # pragma: no cover - argparse only gives the commands above
            raise _UsageError(f"unknown command {command!r}")
    if args.json:
        print(json.dumps(result, ensure_ascii=False, sort_keys=True, indent=2))
    else:
        for table in render(result):
            out.print(table)
    return 0


async def _tail(client: AdminClient, args: argparse.Namespace) -> int:
    async for message in client.tail(device=args.device, count=args.count):
        print(json.dumps(message, ensure_ascii=False, sort_keys=True), flush=True)
    return 0


async def _drain(client: AdminClient, args: argparse.Namespace, out: Console) -> int:
    started = time.monotonic()
    deadline = started + args.timeout
    rows = _outbox_rows(await client.request("status"))
    total = rows
    progress = Progress(
        TextColumn("outbox"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} sent"),
        TextColumn("{task.fields[rows]} left"),
        TimeElapsedColumn(),
        console=out,
        disable=args.json,
    )
    with progress:
        task = progress.add_task("drain", total=max(total, 1), rows=rows)
        while rows > 0 and time.monotonic() < deadline:
            await asyncio.sleep(min(args.interval, max(deadline - time.monotonic(), 0.0)))
            rows = _outbox_rows(await client.request("status"))
            total = max(total, rows)  # new data arrives while draining
            progress.update(task, total=max(total, 1), completed=total - rows, rows=rows)
    elapsed = time.monotonic() - started
    drained = rows == 0
    if args.json:
        print(json.dumps({"drained": drained, "rows": rows, "elapsed_s": round(elapsed, 3)}))
    elif drained:
        out.print(f"outbox empty after {elapsed:.1f} s")
    else:
        out.print(f"outbox still holds {rows} messages after {elapsed:.1f} s")
    return 0 if drained else 1


def _outbox_rows(status: Any) -> int:
    outbox = status.get("outbox") if isinstance(status, dict) else None
    return int(outbox.get("rows", 0)) if isinstance(outbox, dict) else 0


# --------------------------------------------------------------------------- tables


def _text(value: object) -> Text:
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, float):
        return Text(repr(value))
    if isinstance(value, str):
        return Text(value)
    return Text(json.dumps(value, ensure_ascii=False))


def _seconds(value: object) -> object:
    return round(value, 2) if isinstance(value, float) else value


def _pairs(title: str, rows: Iterable[tuple[str, object]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in rows:
        table.add_row(name, _text(value))
    return table


def _status_tables(status: dict[str, Any]) -> list[Table]:
    devices: dict[str, Any] = status.get("devices") or {}
    online = sum(1 for d in devices.values() if d["diagnostics"]["state"] == "online")
    uplink = status.get("uplink") or {}
    outbox = status.get("outbox") or {}
    summary = _pairs(
        f"edge {status.get('edge_id')}",
        [
            ("running", status.get("running")),
            ("devices online", f"{online}/{len(devices)}"),
            ("uplink connected", uplink.get("connected")),
            ("uplink lag (s)", _seconds(uplink.get("lag_s"))),
            ("batches in flight", uplink.get("in_flight")),
            ("messages stored", uplink.get("messages_stored")),
            ("uplink reconnects", uplink.get("reconnects")),
            ("uplink last error", uplink.get("last_error") or None),
            ("outbox rows", outbox.get("rows")),
            ("outbox bytes", outbox.get("bytes")),
            ("outbox oldest (s)", _seconds(outbox.get("oldest_age_s"))),
            (
                "outbox dropped",
                None
                if not outbox
                else f"{outbox.get('dropped_telemetry_rows', 0)} telemetry, "
                f"{outbox.get('dropped_kept_rows', 0)} kept",
            ),
        ],
    )
    table = Table(title="devices", title_justify="left")
    columns = ("device", "connection", "phase", "state", "requests", "errors", "timeouts")
    for column in (*columns, "last error"):
        numeric = column in {"requests", "errors", "timeouts"}
        table.add_column(column, justify="right" if numeric else "left")
    for device_id, dev in devices.items():
        diag = dev["diagnostics"]
        state_style = {"online": "green", "degraded": "yellow"}.get(diag["state"], "red")
        connection = f"{dev.get('protocol', '')} {dev.get('endpoint', '')}".strip()
        table.add_row(
            Text(device_id),
            _text(connection or None),
            _text(dev["phase"]),
            Text(diag["state"], style=state_style),
            _text(diag["requests"]),
            _text(diag["errors"]),
            _text(diag["timeouts"]),
            _text(dev.get("last_error") or diag.get("last_error") or None),
        )
    return [summary, table]


def _devices_table(devices: list[dict[str, Any]]) -> list[Table]:
    table = Table(title="devices", title_justify="left")
    keys = ("id", "model", "protocol", "endpoint", "phase", "state", "polls", "messages")
    for key in keys:
        table.add_column(
            "device" if key == "id" else key,
            justify="right" if key in {"polls", "messages"} else "left",
        )
    for dev in devices:
        table.add_row(*(_text(dev.get(key)) for key in keys))
    return [table]


def _read_table(result: dict[str, Any]) -> list[Table]:
    return [
        _pairs(
            f"{result.get('device')} / {result.get('property')}",
            [
                ("value", result.get("value")),
                ("quality", result.get("quality")),
                ("reason", result.get("reason") or None),
                ("ts_ms", result.get("ts_ms")),
            ],
        )
    ]


def _write_table(result: dict[str, Any]) -> list[Table]:
    title = f"{result.get('device')} / {result.get('property')} written"
    return [_pairs(title, [("read back", result.get("read_back"))])]


def _invoke_table(result: dict[str, Any]) -> list[Table]:
    title = f"{result.get('device')} / {result.get('service')} result"
    values = result.get("result")
    rows = list(values.items()) if isinstance(values, dict) else [("result", values)]
    return [_pairs(title, rows)]
