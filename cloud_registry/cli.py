"""``cloud-registry``: run the registry, migrate its database, and operate it through its API.

    cloud-registry serve (--ca-dir DIR [--tls-cert F --tls-key F] [--enroll-listen ADDR]
                          | --insecure) [--listen ADDR] [--db URL] [--replica-id ID]
    cloud-registry migrate [--db URL]
    cloud-registry models list [--prefix P] | show REF [--versions] [--document]
                          | publish PATH [--dry-run]
    cloud-registry devices list [--model M] [--site S] [--edge E] [--building B]
                                [--selector SEL] [--online | --offline] | show ID
    cloud-registry twin show DEVICE
    cloud-registry watch [--kind K]... [--device ID]... [--site S] [--model M]
                         [--resume TOKEN] [--limit N]

The operator commands talk to the registry at ``--registry`` (default ``$CLOUD_REGISTRY_ADDR``,
else 127.0.0.1:50051) with :class:`~cloud_registry.api.RegistryClient`; ``--json`` prints
machine-readable output (``watch``: one JSON object per line). Global options may come before
or after the command.

Exit codes: 0 success; 1 the registry refused the request or the input is invalid; 2 usage;
3 the registry cannot be reached.

Security commands (``ca``, ``edges``, ``apikeys``, ``audit``): :mod:`cloud_registry.cli_security`.
``serve`` is secure unless told ``--insecure`` (plain text, logged as a warning): mutual TLS on
``--listen`` and one-way TLS (enrollment, CRL, API keys) on ``--enroll-listen``.

This module also provides ``thing-model publish`` (entry point group ``thing_model.commands``),
so that ``thing_models`` never imports the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloud_registry.api.client import DEFAULT_TARGET, RegistryClient
from cloud_registry.api.errors import RegistryError, Unavailable
from cloud_registry.api.types import Change, ChangeKind, Device, Model, PublishedModel, Twin
from cloud_registry.cli_security import add_security_commands

if TYPE_CHECKING:
    from cloud_registry.storage.base import Storage

__all__ = [
    "default_database_path",
    "default_database_url",
    "main",
    "register_thing_model_publish",
]

log = logging.getLogger("cloud_registry.cli")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

API_KEY_ENV = "CLOUD_REGISTRY_API_KEY"
ADDR_ENV = "CLOUD_REGISTRY_ADDR"
DB_ENV = "CLOUD_REGISTRY_DB"

Handler = Callable[[argparse.Namespace, Console, Console], int]


def _version() -> str:
    try:
        return version("community-iot-edge")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def default_database_path() -> Path:
    """``$XDG_DATA_HOME/cloud-registry/registry.db`` (``~/.local/share/...`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cloud-registry" / "registry.db"


def default_database_url() -> str:
    """``$CLOUD_REGISTRY_DB``, else the SQLite file of :func:`default_database_path`."""
    return os.environ.get(DB_ENV) or f"sqlite:///{default_database_path()}"


def _default_target() -> str:
    return os.environ.get(ADDR_ENV) or DEFAULT_TARGET


# --------------------------------------------------------------------------- parser


def _client_options(*, suppress: bool) -> argparse.ArgumentParser:
    """``--registry``, ``--json``, ``--timeout``: on the main parser with defaults, and on each
    command (without defaults, so they may come after the command too)."""
    parser = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--registry",
        metavar="ADDR",
        default=default(_default_target()),
        help=f"registry address host:port (default: ${ADDR_ENV}, else {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="machine-readable output (JSON)",
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        default=default(None),
        help="talk TLS, trusting this root (the CA's root.pem); without it: plain text",
    )
    parser.add_argument(
        "--client-cert", type=Path, metavar="FILE", default=default(None), help="mTLS: chain"
    )
    parser.add_argument(
        "--client-key", type=Path, metavar="FILE", default=default(None), help="mTLS: key"
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        default=default(os.environ.get(API_KEY_ENV, "")),
        help=f"an integrator API key (one-way TLS port; default: ${API_KEY_ENV})",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        default=default(10.0),
        help="deadline of each call (default: 10)",
    )
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help=f"database URL: sqlite:///PATH or postgresql://... (default: ${DB_ENV}, else the "
        f"SQLite file {default_database_path()}, i.e. $XDG_DATA_HOME/cloud-registry/"
        "registry.db, created with its folder when missing)",
    )


def _parser() -> argparse.ArgumentParser:
    common = _client_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="cloud-registry",
        description="The cloud thing-model registry: run it (serve, migrate) and operate it "
        "through its gRPC API (models, devices, twin, watch).",
        epilog="exit codes: 0 ok, 1 refused by the registry or invalid input, 2 usage, "
        "3 registry unreachable",
        parents=[_client_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "serve",
        help="run a registry replica",
        description="Run a registry replica: migrate the database, then serve the gRPC API "
        "until SIGINT/SIGTERM. With no arguments it listens on 127.0.0.1:50051 and keeps its "
        "data in a local SQLite file. Logs to standard error; once bound it logs "
        "'listening on HOST:PORT' (port 0 picks a free port).",
    )
    p.add_argument(
        "--listen",
        metavar="ADDR",
        default="127.0.0.1:50051",
        help="host:port to bind (default: 127.0.0.1:50051; 0.0.0.0:PORT for every interface)",
    )
    _db_option(p)
    p.add_argument("--replica-id", metavar="ID", default="replica-1", help="(default: replica-1)")
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="(default: INFO)",
    )
    p.add_argument(
        "--ca-dir",
        type=Path,
        metavar="DIR",
        help="CA folder (cloud-registry ca init): intermediate, command key, server.pem/.key",
    )
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="(default: DIR/server.pem)")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="(default: DIR/server.key)")
    p.add_argument(
        "--enroll-listen",
        metavar="ADDR",
        default="127.0.0.1:50052",
        help="one-way TLS port: Enroll, GetCrl, API keys (default: 127.0.0.1:50052)",
    )
    p.add_argument(
        "--insecure", action="store_true", help="plain text, no authentication (tests only)"
    )
    p.set_defaults(handler=_serve)

    p = sub.add_parser(
        "migrate",
        help="apply pending database migrations",
        description="Apply pending schema migrations and print the schema version.",
    )
    _db_option(p)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    add_security_commands(sub, _db_option)
    p.set_defaults(handler=_migrate)

    models = sub.add_parser("models", help="thing models: list, show, publish").add_subparsers(
        dest="models_command", required=True, metavar="ACTION"
    )
    p = models.add_parser("list", parents=[common], help="list model names (newest versions)")
    p.add_argument("--prefix", default="", help="only names starting with this")
    p.set_defaults(handler=_operator(_models_list))
    p = models.add_parser("show", parents=[common], help="show a model version")
    p.add_argument("ref", metavar="REF", help="name@version, or name for the newest version")
    p.add_argument("--versions", action="store_true", help="also list every version")
    p.add_argument("--document", action="store_true", help="also print the YAML document")
    p.set_defaults(handler=_operator(_models_show))
    p = models.add_parser(
        "publish",
        parents=[common],
        help="publish a model file",
        description="Publish a model file (YAML, Alibaba TSL or WoT TM/TD).",
    )
    _publish_arguments(p)

    devices = sub.add_parser("devices", help="devices: list, show").add_subparsers(
        dest="devices_command", required=True, metavar="ACTION"
    )
    p = devices.add_parser("list", parents=[common], help="list devices matching filters")
    p.add_argument("--model", default="", help="model name (any version) or name@version")
    p.add_argument("--site", default="")
    p.add_argument("--edge", default="", metavar="EDGE_ID")
    p.add_argument("--building", default="")
    p.add_argument(
        "--selector",
        default="",
        metavar="LABELS",
        help="label selector: key=value,key!=value,key,!key,key in (a,b),key notin (a,b)",
    )
    online = p.add_mutually_exclusive_group()
    online.add_argument("--online", dest="online", action="store_true", default=None)
    online.add_argument("--offline", dest="online", action="store_false")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="at most N devices")
    p.set_defaults(handler=_operator(_devices_list))
    p = devices.add_parser("show", parents=[common], help="show one device")
    p.add_argument("device_id", metavar="ID")
    p.set_defaults(handler=_operator(_devices_show))

    twin = sub.add_parser("twin", help="digital twins: show").add_subparsers(
        dest="twin_command", required=True, metavar="ACTION"
    )
    p = twin.add_parser("show", parents=[common], help="reported and desired state")
    p.add_argument("device_id", metavar="DEVICE")
    p.set_defaults(handler=_operator(_twin_show))

    p = sub.add_parser(
        "watch",
        parents=[common],
        help="stream changes",
        description="Print changes as they are committed (from now, or after --resume TOKEN; "
        "0: from the oldest change retained), reconnecting from the last change seen when the "
        "registry becomes unavailable. With --json, one JSON object per line.",
    )
    p.add_argument(
        "--kind",
        action="append",
        default=[],
        choices=[k.value for k in ChangeKind],
        metavar="KIND",
        help="only these kinds (repeatable): " + ", ".join(k.value for k in ChangeKind),
    )
    p.add_argument("--device", action="append", default=[], metavar="ID", help="(repeatable)")
    p.add_argument("--site", default="")
    p.add_argument("--model", default="", help="model name")
    p.add_argument("--resume", default="", metavar="TOKEN", help="resume after this token")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="exit after N changes")
    p.set_defaults(handler=_operator(_watch))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    handler: Handler = args.handler
    try:
        return handler(args, out, err)
    except _Exit as exc:
        return exc.code
    except KeyboardInterrupt:
        return 130


# --------------------------------------------------------------------------- helpers


def _client(args: argparse.Namespace) -> RegistryClient:
    credentials = None
    tls_ca = getattr(args, "tls_ca", None)
    client_cert = getattr(args, "client_cert", None)
    client_key = getattr(args, "client_key", None)
    api_key = getattr(args, "api_key", "")
    if tls_ca is not None:
        import grpc

        try:
            root = tls_ca.read_bytes()
            cert = client_cert.read_bytes() if client_cert else None
            key = client_key.read_bytes() if client_key else None
        except OSError as exc:
            raise _ClientSetupError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from exc
        credentials = grpc.ssl_channel_credentials(root, key, cert)
    metadata = (("x-api-key", api_key),) if api_key else ()
    return RegistryClient(
        args.registry, timeout=args.timeout, credentials=credentials, metadata=metadata
    )


class _ClientSetupError(Exception):
    """The client's TLS files cannot be read."""


def _report(exc: RegistryError, err: Console, prog: str, args: argparse.Namespace) -> int:
    """Print a registry error (with its violations) and return the exit code."""
    if isinstance(exc, Unavailable):
        err.print(
            f"{prog}: error: cannot reach the registry at {args.registry}: {exc.message} "
            f"(is it running? set --registry or ${ADDR_ENV})",
            markup=False,
        )
        return EXIT_UNREACHABLE
    err.print(f"{prog}: error: {exc.code}: {exc.message}", markup=False)
    for violation in exc.violations:
        if str(violation) not in exc.message:
            err.print(f"  {violation}", markup=False)
    return EXIT_ERROR


def _operator(run: Callable[[RegistryClient, argparse.Namespace, Console], None]) -> Handler:
    """A command that talks to the registry: errors are reported and mapped to exit codes."""

    def handler(args: argparse.Namespace, out: Console, err: Console) -> int:
        try:
            with _client(args) as client:
                run(client, args, out)
        except RegistryError as exc:
            return _report(exc, err, "cloud-registry", args)
        except _ClientSetupError as exc:
            err.print(f"cloud-registry: error: {exc}", markup=False)
            return EXIT_USAGE
        return EXIT_OK

    return handler


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _ts(ms: int) -> str:
    if not ms:
        return ""
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _fields(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, escape(value))
    return table


# --------------------------------------------------------------------------- serve / migrate


class _Exit(Exception):
    """Stop the command with this exit code (the reason was printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _open_storage(url: str, err: Console, replica_id: str = "") -> Storage:
    """The storage ``url`` names (a SQLite file's folder is created), or :class:`_Exit`."""
    from cloud_registry.storage.factory import open_storage

    if url.startswith("sqlite:///"):
        path: Path | None = Path(url.removeprefix("sqlite:///").partition("?")[0])
    elif "://" not in url:
        path = Path(url).expanduser()
    else:
        path = None
    try:
        if path is not None and path.name:
            path.parent.mkdir(parents=True, exist_ok=True)
        return open_storage(url, replica_id=replica_id)
    except ValueError as exc:  # the URL itself
        err.print(f"cloud-registry: error: --db: {exc}", markup=False)
        raise _Exit(EXIT_USAGE) from exc
    except Exception as exc:
        err.print(f"cloud-registry: error: cannot open database {url}: {exc}", markup=False)
        raise _Exit(EXIT_ERROR) from exc


def _migrate_storage(storage: Storage, url: str, err: Console) -> int:
    try:
        return storage.migrate()
    except Exception as exc:
        err.print(f"cloud-registry: error: cannot migrate database {url}: {exc}", markup=False)
        raise _Exit(EXIT_ERROR) from exc


def _migrate(args: argparse.Namespace, out: Console, err: Console) -> int:
    url = args.db or default_database_url()
    storage = _open_storage(url, err)
    try:
        schema = _migrate_storage(storage, url, err)
    finally:
        storage.close()
    if args.json:
        _print_json({"database": url, "schema_version": schema})
    else:
        out.print(f"{url}: schema version {schema}", markup=False)
    return EXIT_OK


def _serve(args: argparse.Namespace, out: Console, err: Console) -> int:
    if not args.insecure and args.ca_dir is None:
        err.print(
            "cloud-registry: error: serve needs --ca-dir DIR (cloud-registry ca init, "
            "ca server-cert), or --insecure for plain text",
            markup=False,
        )
        return EXIT_USAGE
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    url = args.db or default_database_url()
    storage = _open_storage(url, err, args.replica_id)
    try:
        return asyncio.run(_run_server(storage, url, args, err))
    finally:
        storage.close()


async def _run_server(storage: Storage, url: str, args: argparse.Namespace, err: Console) -> int:
    from cloud_registry.server.app import build_server
    from cloud_registry.server.context import RegistrySettings

    schema = _migrate_storage(storage, url, err)
    log.info("database %s at schema version %s", url, schema)
    settings = RegistrySettings(
        listen=args.listen, replica_id=args.replica_id, enroll_listen=args.enroll_listen
    )
    security = None
    if not args.insecure:
        from cloud_registry.server.tls import ServerSecurity
        from security.errors import SecurityError

        try:
            security = ServerSecurity.from_ca_dir(
                args.ca_dir, tls_cert=args.tls_cert, tls_key=args.tls_key
            )
        except SecurityError as exc:
            err.print(f"cloud-registry: error: --ca-dir {args.ca_dir}: {exc}", markup=False)
            return EXIT_ERROR
    try:
        server = build_server(storage, settings, security)
        await server.start()
    except Exception as exc:
        err.print(f"cloud-registry: error: cannot listen on {args.listen}: {exc}", markup=False)
        return EXIT_ERROR
    log.info("listening on %s", server.address)
    if security is not None:
        log.info("enrollment (one-way TLS) listening on %s", server.enroll_address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await server.stop(grace=5.0)
    return EXIT_OK


# --------------------------------------------------------------------------- models


def _publish_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument(
        "--dry-run", action="store_true", help="validate and check the version bump only"
    )
    p.set_defaults(handler=_publish)


def _publish(args: argparse.Namespace, out: Console, err: Console) -> int:
    prog = "thing-model" if getattr(args, "command", "") == "publish" else "cloud-registry"
    try:
        document = args.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"{args.path}: error: cannot read: {exc}", markup=False)
        return EXIT_ERROR
    try:
        with _client(args) as client:
            result = client.publish_model(document, dry_run=args.dry_run)
    except _ClientSetupError as exc:
        err.print(f"{prog}: error: {exc}", markup=False)
        return EXIT_USAGE
    except Unavailable as exc:
        return _report(exc, err, prog, args)
    except RegistryError as exc:
        if args.json:
            _print_json(
                {
                    "path": str(args.path),
                    "ok": False,
                    "code": exc.code,
                    "message": exc.message,
                    "violations": [
                        {"field": v.field, "description": v.description} for v in exc.violations
                    ],
                }
            )
        err.print(f"{args.path}: error: {exc.message}", markup=False)
        for violation in exc.violations:
            if str(violation) not in exc.message:
                err.print(f"{args.path}: {violation}", markup=False)
        return EXIT_ERROR
    _print_published(args, result, out, err)
    return EXIT_OK


def _print_published(
    args: argparse.Namespace, result: PublishedModel, out: Console, err: Console
) -> None:
    model = result.model
    if args.json:
        _print_json(
            {"path": str(args.path), "ok": True, "dry_run": args.dry_run, **result.to_dict()}
        )
    else:
        counts = ", ".join(
            _plural(count, singular, plural)
            for count, singular, plural in (
                (model.property_count, "property", "properties"),
                (model.event_count, "event", "events"),
                (model.service_count, "service", "services"),
            )
        )
        if args.dry_run:
            verb = "valid; would publish"
        elif result.unchanged:
            verb = "unchanged: already published"
        else:
            verb = "published"
        out.print(f"[green]{verb}[/] {escape(model.ref)} ({counts})")
    for note in result.notes:
        err.print(f"{args.path}: note: {note}", markup=False)


def _models_list(client: RegistryClient, args: argparse.Namespace, out: Console) -> None:
    models = list(client.iter_models(args.prefix))
    if args.json:
        _print_json([m.to_dict() for m in models])
        return
    table = Table(title=f"models ({len(models)})")
    table.add_column("name", no_wrap=True)
    for column in ("latest", "title", "vendor", "versions"):
        table.add_column(column, overflow="fold")
    for m in models:
        table.add_row(
            escape(m.name),
            escape(m.latest_version),
            escape(m.title),
            escape(m.vendor),
            str(m.version_count),
        )
    out.print(table)


def _model_rows(model: Model) -> list[tuple[str, str]]:
    return [
        ("ref", model.ref),
        ("title", model.title),
        ("vendor", model.vendor),
        ("description", model.description),
        ("published", _ts(model.published_ms)),
        ("properties", str(model.property_count)),
        ("events", str(model.event_count)),
        ("services", str(model.service_count)),
    ]


def _models_show(client: RegistryClient, args: argparse.Namespace, out: Console) -> None:
    model = client.get_model(args.ref)
    versions = client.list_model_versions(model.name) if args.versions else ()
    if args.json:
        data = model.to_dict()
        if args.versions:
            data["versions"] = [v.version for v in versions]
        _print_json(data)
        return
    out.print(_fields(model.ref, _model_rows(model)))
    if args.versions:
        table = Table(title=f"versions of {escape(model.name)}")
        table.add_column("version")
        table.add_column("published")
        table.add_column("title", overflow="fold")
        for v in versions:
            table.add_row(escape(v.version), _ts(v.published_ms), escape(v.title))
        out.print(table)
    if args.document:
        out.print(model.document_yaml, markup=False, end="")


# --------------------------------------------------------------------------- devices, twin


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _devices_list(client: RegistryClient, args: argparse.Namespace, out: Console) -> None:
    devices: list[Device] = []
    for device in client.iter_devices(
        model=args.model,
        site=args.site,
        edge_id=args.edge,
        building=args.building,
        label_selector=args.selector,
        online=args.online,
    ):
        devices.append(device)
        if args.limit and len(devices) >= args.limit:
            break
    if args.json:
        _print_json([d.to_dict() for d in devices])
        return
    table = Table(title=f"devices ({len(devices)})")
    table.add_column("id", no_wrap=True)
    table.add_column("model", no_wrap=True)
    for column in ("edge", "site", "building", "online", "labels"):
        table.add_column(column, overflow="fold")
    for d in devices:
        table.add_row(
            escape(d.id),
            escape(d.model),
            escape(d.edge_id),
            escape(d.site),
            escape(d.building),
            "[green]yes[/]" if d.online else "[dim]no[/]",
            escape(_labels(d.labels)),
        )
    out.print(table)


def _devices_show(client: RegistryClient, args: argparse.Namespace, out: Console) -> None:
    d = client.get_device(args.device_id)
    if args.json:
        _print_json(d.to_dict())
        return
    loc = d.location
    where = ", ".join(
        part
        for part in (
            f"{loc.latitude}, {loc.longitude}" if loc.latitude is not None else "",
            f"floor {loc.floor}" if loc.floor else "",
            f"room {loc.room}" if loc.room else "",
        )
        if part
    )
    rows = [
        ("id", d.id),
        ("model", d.model),
        ("edge", d.edge_id),
        ("site", d.site),
        ("building", d.building),
        ("labels", _labels(d.labels)),
        ("location", where),
        ("online", "yes" if d.online else "no"),
        ("last seen", _ts(d.last_seen_ms)),
        ("revision", str(d.revision)),
        ("created", _ts(d.created_ms)),
        ("updated", _ts(d.updated_ms)),
    ]
    out.print(_fields(d.id, rows))


def _twin_show(client: RegistryClient, args: argparse.Namespace, out: Console) -> None:
    twin = client.get_twin(args.device_id)
    if args.json:
        _print_json(twin.to_dict())
        return
    out.print(_twin_table(twin))


def _twin_table(twin: Twin) -> Table:
    table = Table(
        title=f"{escape(twin.device_id)} ({escape(twin.model)}), revision {twin.revision}"
    )
    for column in ("property", "reported", "quality", "at", "desired", ""):
        table.add_column(column, overflow="fold")
    for name in sorted(set(twin.reported) | set(twin.desired)):
        reported = twin.reported.get(name)
        desired = twin.desired.get(name)
        table.add_row(
            escape(name),
            escape(_value(reported.value)) if reported else "",
            reported.quality if reported else "",
            _ts(reported.ts_ms) if reported else "",
            escape(_value(desired.value)) if desired else "",
            "[yellow]pending[/]" if name in twin.delta else "",
        )
    return table


# --------------------------------------------------------------------------- watch


def _change_summary(change: Change) -> str:
    payload: Any = change.payload
    kind = change.kind
    if kind in (ChangeKind.TWIN_REPORTED, ChangeKind.TWIN_DESIRED):
        values = ", ".join(f"{k}={_value(v.value)}" for k, v in payload.properties.items())
        return f"{values} (revision {payload.revision})"
    if kind in (ChangeKind.EVENT, ChangeKind.ALARM_ACKNOWLEDGED):
        params = ", ".join(f"{k}={_value(v)}" for k, v in payload.params.items())
        return f"{payload.level} {payload.name}" + (f" {params}" if params else "")
    if kind in (ChangeKind.DEVICE_CREATED, ChangeKind.DEVICE_UPDATED) and payload is not None:
        return f"{payload.model} edge={payload.edge_id} revision {payload.revision}"
    if kind is ChangeKind.MODEL_PUBLISHED and payload is not None:
        return str(payload.ref)
    if kind is ChangeKind.COMMAND_UPDATED and payload is not None:
        return f"{payload.id} {payload.status}"
    return ""


def _watch(client: RegistryClient, args: argparse.Namespace, out: Console) -> None:
    # Fail at once (exit 3) when the registry cannot be reached at all; once watching,
    # reconnect from the last change seen for as long as it takes.
    client.list_models(page_size=1)
    count = 0
    stream = client.watch(
        kinds=args.kind,
        device_ids=args.device,
        site=args.site,
        model=args.model,
        resume_token=args.resume,
        auto_resume=True,
        reconnect_delay=0.5,
    )
    with stream:
        for change in stream:
            if args.json:
                sys.stdout.write(json.dumps(change.to_dict(), ensure_ascii=False) + "\n")
                sys.stdout.flush()
            else:
                out.print(
                    f"{_ts(change.ts_ms)} [bold]{change.kind or 'unknown'}[/] "
                    f"{escape(change.device_id or change.model)} "
                    f"{escape(_change_summary(change))}"
                )
            count += 1
            if args.limit is not None and count >= args.limit:
                break


# --------------------------------------------------------------------------- thing-model publish


def register_thing_model_publish(subparsers: Any) -> None:
    """Entry point (group ``thing_model.commands``): adds ``thing-model publish``."""
    p = subparsers.add_parser(
        "publish",
        parents=[_client_options(suppress=False)],
        help="publish a model file to a registry",
        description="Publish a model file (YAML, Alibaba TSL or WoT TM/TD) to a cloud "
        "registry. Exit codes: 0 published (or valid with --dry-run), 1 refused (every "
        "violation printed), 3 registry unreachable.",
    )
    _publish_arguments(p)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
