"""``cloud-registry`` security commands: the CA, edges, API keys and the audit log.

    cloud-registry ca init --dir DIR [--name NAME]
    cloud-registry ca server-cert --dir DIR --host HOST [--host HOST]... [--days N]
    cloud-registry ca rotate-intermediate --dir DIR [--db URL]
    cloud-registry edges add EDGE --site SITE [--ttl 24h] [--db URL]
    cloud-registry edges list [--json] [--db URL]
    cloud-registry edges revoke EDGE [--db URL]
    cloud-registry apikeys add NAME --site SITE --scope read-twins,... [--db URL]
    cloud-registry audit [--kind K] [--subject S] [--since ISO-TIME] [--limit N] [--json]
                         [--db URL]

``ca`` works on a CA folder (see :mod:`cloud_registry.ca_admin`). ``edges``, ``apikeys`` and
``audit`` work on the registry's database (``--db``, like ``migrate``), not through a running
server: an operator on the database host needs no credentials of the API, and running replicas
learn a revocation from the database's change feed (PostgreSQL LISTEN/NOTIFY; SQLite within
the change hub's poll interval, 1 s). Tokens and API keys are printed once, never stored.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from cloud_registry.ca_admin import (
    API_SCOPES,
    init_registry_ca,
    issue_server_certificate,
    new_api_key,
    rotate_registry_intermediate,
)
from security.audit import AuditKind
from security.errors import SecurityError
from security.identity import Identity
from security.tokens import new_token

if TYPE_CHECKING:
    from cloud_registry.storage.base import Storage

__all__ = ["add_security_commands"]

Handler = Callable[[argparse.Namespace, Console, Console], int]
_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(text: str) -> timedelta:
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30m, 24h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = scopes - API_SCOPES
    if not scopes or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scope(s) {sorted(unknown)}; choose from {sorted(API_SCOPES)}"
        )
    return scopes


def _edge_id(text: str) -> str:
    try:
        return Identity("edge", text).check().id
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _since(text: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def add_security_commands(sub: Any, db_option: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``ca``, ``edges``, ``apikeys`` and ``audit`` to the ``cloud-registry`` parser."""
    ca = sub.add_parser("ca", help="the deployment's CA: init, server-cert, rotate-intermediate")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, metavar="COMMAND")
    p = ca_sub.add_parser("init", help="create a root, an issuing intermediate, a command key")
    p.add_argument("--dir", type=Path, required=True, help="the CA folder (created)")
    p.add_argument("--name", default="Community IoT", help="(default: Community IoT)")
    p.set_defaults(handler=_ca_init)
    p = ca_sub.add_parser("server-cert", help="the registry's TLS certificate")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--host", action="append", required=True, help="DNS name or IP (repeatable)")
    p.add_argument("--days", type=int, default=30, help="validity (default: 30)")
    p.set_defaults(handler=_ca_server_cert)
    p = ca_sub.add_parser("rotate-intermediate", help="new issuing key (needs root.key back)")
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--db", metavar="URL", default=None, help="record it in this audit log")
    p.set_defaults(handler=_ca_rotate)

    edges = sub.add_parser("edges", help="edge identities: add (token), list, revoke")
    edges_sub = edges.add_subparsers(dest="edges_command", required=True, metavar="COMMAND")
    p = edges_sub.add_parser("add", help="allow an edge to enroll: prints a one-time token")
    p.add_argument("edge_id", metavar="EDGE", type=_edge_id)
    p.add_argument("--site", required=True)
    p.add_argument("--ttl", type=_duration, default=timedelta(hours=24), help="(default: 24h)")
    db_option(p)
    p.set_defaults(handler=_edges_add)
    p = edges_sub.add_parser("list", help="edges, their status and certificates")
    p.add_argument("--json", action="store_true")
    db_option(p)
    p.set_defaults(handler=_edges_list)
    p = edges_sub.add_parser("revoke", help="revoke an edge and all its certificates")
    p.add_argument("edge_id", metavar="EDGE", type=_edge_id)
    db_option(p)
    p.set_defaults(handler=_edges_revoke)

    keys = sub.add_parser("apikeys", help="integrators' API keys: add")
    keys_sub = keys.add_subparsers(dest="apikeys_command", required=True, metavar="COMMAND")
    p = keys_sub.add_parser("add", help="a new API key for one site: printed once")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--site", required=True)
    p.add_argument(
        "--scope", type=_scopes, required=True, help=f"comma-separated: {sorted(API_SCOPES)}"
    )
    db_option(p)
    p.set_defaults(handler=_apikeys_add)

    p = sub.add_parser("audit", help="the security audit log")
    p.add_argument("--kind", default="", choices=["", *(k.value for k in AuditKind)])
    p.add_argument("--subject", default="")
    p.add_argument("--since", type=_since, default=0, metavar="TIME")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    db_option(p)
    p.set_defaults(handler=_audit)


# --------------------------------------------------------------------------- ca


def _fail(err: Console, message: str) -> int:
    err.print(f"cloud-registry: error: {message}", markup=False)
    return 1


def _ca_init(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        ca = init_registry_ca(args.dir, args.name)
    except SecurityError as exc:
        return _fail(err, str(exc))
    out.print(f"CA {args.name!r} created in {args.dir}", markup=False)
    out.print(f"  root:         {args.dir / 'root.pem'} (give it to every party)", markup=False)
    out.print(f"  intermediate: {args.dir / 'intermediate.pem'} (issues certificates)")
    out.print(f"  command key:  {args.dir / 'command.key'} (signs commands to edges)")
    out.print(
        f"Move {args.dir / 'root.key'} OFFLINE now: the registry needs only the intermediate; "
        "bring the root key back only to rotate the intermediate.",
        markup=False,
    )
    del ca
    return 0


def _ca_server_cert(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        path = issue_server_certificate(args.dir, args.host, validity=timedelta(days=args.days))
    except SecurityError as exc:
        return _fail(err, str(exc))
    out.print(f"server certificate for {', '.join(args.host)}: {path}", markup=False)
    return 0


def _ca_rotate(args: argparse.Namespace, out: Console, err: Console) -> int:
    try:
        ca = rotate_registry_intermediate(args.dir)
    except SecurityError as exc:
        return _fail(err, f"{exc} (rotation needs root.key in the CA folder)")
    serial = f"{ca.intermediate.serial_number:x}"
    out.print(
        f"new intermediate serial {serial}; restart the registry replicas; certificates "
        "already issued stay valid; move root.key offline again",
        markup=False,
    )
    if args.db is None:
        return 0

    def work(storage: Storage) -> int:
        from cloud_registry.storage.security_store import AuditRecord

        detail = f"intermediate of {args.dir} rotated: new serial {serial}"
        storage.security.append_audit(
            [AuditRecord(_now_ms(), AuditKind.CA_ROTATED.value, f"ca:{args.dir}", detail, "cli")]
        )
        return 0

    return _with_storage(args, err, work)


# --------------------------------------------------------------------------- database


def _with_storage(args: argparse.Namespace, err: Console, work: Callable[[Storage], int]) -> int:
    from cloud_registry import cli

    url = args.db or cli.default_database_url()
    storage = cli._open_storage(url, err)
    try:
        cli._migrate_storage(storage, url, err)
        return work(storage)
    finally:
        storage.close()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _edges_add(args: argparse.Namespace, out: Console, err: Console) -> int:
    from cloud_registry.storage.base import StorageError

    def work(storage: Storage) -> int:
        text, record = new_token(args.edge_id, args.site, datetime.now(UTC), ttl=args.ttl)
        try:
            storage.security.add_edge(args.edge_id, args.site, record, _now_ms())
        except StorageError as exc:
            return _fail(err, str(exc))
        err.print(
            f"edge {args.edge_id} (site {args.site}) may enroll until "
            f"{record.expires_at.isoformat(timespec='seconds')} with this one-time token:",
            markup=False,
        )
        out.print(text, markup=False)
        return 0

    return _with_storage(args, err, work)


def _edges_list(args: argparse.Namespace, out: Console, err: Console) -> int:
    from cloud_registry import cli

    def work(storage: Storage) -> int:
        edges = storage.security.list_edges()
        if args.json:
            cli._print_json(
                [
                    {
                        "edge_id": e.edge_id,
                        "site": e.site,
                        "status": e.status.value,
                        "created_ms": e.created_ms,
                        "revoked_ms": e.revoked_ms,
                        "certificates": [
                            {
                                "serial": c.serial,
                                "not_after_ms": c.not_after_ms,
                                "revoked": c.revoked,
                            }
                            for c in e.certificates
                        ],
                    }
                    for e in edges
                ]
            )
            return 0
        table = Table(title=f"{len(edges)} edge(s)")
        for column in ("edge", "site", "status", "certificates", "valid until"):
            table.add_column(column)
        for e in edges:
            current = [c for c in e.certificates if not c.revoked]
            until = max((c.not_after_ms for c in current), default=0)
            table.add_row(
                e.edge_id,
                e.site,
                e.status.value,
                str(len(e.certificates)),
                cli._ts(until) if until else "-",
            )
        out.print(table)
        return 0

    return _with_storage(args, err, work)


def _edges_revoke(args: argparse.Namespace, out: Console, err: Console) -> int:
    from cloud_registry.storage.base import NotFound
    from cloud_registry.storage.security_store import AuditRecord

    def work(storage: Storage) -> int:
        try:
            serials = storage.security.revoke_edge(args.edge_id, _now_ms())
        except NotFound as exc:
            return _fail(err, str(exc))
        detail = f"edge {args.edge_id} revoked with {len(serials)} certificate(s)"
        storage.security.append_audit(
            [AuditRecord(_now_ms(), AuditKind.REVOKED.value, f"edge:{args.edge_id}", detail, "cli")]
        )
        out.print(f"{detail}: {', '.join(serials) or 'none issued'}", markup=False)
        return 0

    return _with_storage(args, err, work)


def _apikeys_add(args: argparse.Namespace, out: Console, err: Console) -> int:
    from cloud_registry.storage.base import StorageError
    from cloud_registry.storage.security_store import ApiKeyRecord

    def work(storage: Storage) -> int:
        text, key_id, digest = new_api_key()
        record = ApiKeyRecord(key_id, args.name, args.site, args.scope, digest, _now_ms())
        try:
            storage.security.add_api_key(record)
        except StorageError as exc:
            return _fail(err, str(exc))
        err.print(
            f"API key {args.name} (site {args.site}, scopes {','.join(sorted(args.scope))}); "
            "shown once, send it as metadata x-api-key:",
            markup=False,
        )
        out.print(text, markup=False)
        return 0

    return _with_storage(args, err, work)


def _audit(args: argparse.Namespace, out: Console, err: Console) -> int:
    from cloud_registry import cli

    def work(storage: Storage) -> int:
        page = storage.security.list_audit(
            kind=args.kind, subject=args.subject, since_ms=args.since, limit=args.limit
        )
        events = page.items
        if args.json:
            cli._print_json(
                [
                    {
                        "id": e.id,
                        "time_ms": e.time_ms,
                        "kind": e.kind,
                        "subject": e.subject,
                        "detail": e.detail,
                        "peer": e.peer,
                    }
                    for e in events
                ]
            )
            return 0
        table = Table(title=f"{len(events)} audit event(s)")
        for column in ("time", "kind", "subject", "detail", "peer"):
            table.add_column(column)
        for e in events:
            table.add_row(cli._ts(e.time_ms), e.kind, e.subject, e.detail, e.peer)
        out.print(table)
        return 0

    return _with_storage(args, err, work)
