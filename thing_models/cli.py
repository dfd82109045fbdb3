"""``thing-model``: validate, convert, diff and scaffold thing models; print the message schema.

Errors go to standard error, one per line, as ``file:line:column: error: ...`` so editors and CI
logs can jump to them. Exit codes: 0 success, 1 a model (or a version bump) is invalid, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from thing_models.errors import ThingModelError
from thing_models.formats import Exported, Imported
from thing_models.formats.detect import EXPORT_FORMATS, ExportFormat, export_model, import_model
from thing_models.model import MODEL_NAME_RE, ThingModel
from thing_models.yaml_source import dump_yaml

__all__ = ["main"]

_PROTOCOLS = ("modbus", "bacnet", "mqtt", "coap", "none")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("community-iot-edge")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thing-model",
        description="Thing-model tools: validate, convert (YAML, Alibaba TSL, W3C WoT TD/TM), "
        "diff versions, scaffold new models, print the message envelope schema.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "validate",
        help="check model files; every error with file:line:column",
        description="Check model files of any supported format. Reports every "
        "problem (not only the first) and exits 1 if any file is invalid.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument(
        "--models-dir",
        type=Path,
        help="folder of models that extends/components refer to (default: each file's own folder)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable result")

    p = sub.add_parser(
        "convert",
        help="convert a model between formats",
        description="Convert a model (format detected from its content) to "
        "another format. What the target cannot express is reported by name.",
    )
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--to", required=True, choices=EXPORT_FORMATS, help="target format")
    p.add_argument("-o", "--output", type=Path, help="write here instead of standard output")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="value for a WoT {{NAME}} placeholder (repeatable)",
    )
    p.add_argument(
        "--ref-dir",
        type=Path,
        help="local folder that resolves remote WoT "
        "references (tm:extends, tm:ref, tm:submodel) by file name",
    )
    p.add_argument(
        "--allow-unresolved",
        action="store_true",
        help="import what is local and list unresolved WoT references",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 1) when the target format cannot express everything",
    )

    p = sub.add_parser(
        "diff",
        help="classify changes between two versions of a model",
        description="Classify every change as breaking (major), additive (minor) "
        "or cosmetic (patch); exit 1 when NEW's version bump is too small.",
    )
    p.add_argument("old", type=Path, metavar="OLD")
    p.add_argument("new", type=Path, metavar="NEW")
    p.add_argument("--json", action="store_true", help="machine-readable result")

    p = sub.add_parser(
        "new",
        help="scaffold a new model file",
        description="Write a small valid model to start from.",
    )
    p.add_argument("name", metavar="NAME", help="namespace/name, e.g. com.acme.energy/meter-3p")
    p.add_argument(
        "--protocol",
        choices=_PROTOCOLS,
        default="modbus",
        help="binding to scaffold (default: modbus)",
    )
    p.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    sub.add_parser(
        "schema",
        help="print the JSON Schema of the message envelope",
        description="Print the published JSON Schema of canonical messages.",
    )
    _load_plugins(sub)
    return parser


#: Entry-point group of extra subcommands. Each entry point is a callable
#: ``register(subparsers) -> None`` that adds a subparser and sets its ``handler`` default to a
#: callable ``handler(args, out, err) -> int`` (exit code). Other packages (e.g. the cloud
#: registry's ``publish``) plug in this way, so this package imports none of them.
PLUGIN_GROUP = "thing_model.commands"


def _load_plugins(sub: Any) -> None:
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=PLUGIN_GROUP):
        try:
            register = entry_point.load()
            register(sub)
        except Exception as exc:  # a broken plugin must not take the built-in commands down
            print(
                f"thing-model: note: command {entry_point.name!r} unavailable "
                f"({entry_point.value}): {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    handlers = {
        "validate": _validate,
        "convert": _convert,
        "diff": _diff,
        "new": _new,
        "schema": _schema,
    }
    try:
        plugin = getattr(args, "handler", None)
        if plugin is not None:
            code: int = plugin(args, out, err)
            return code
        return handlers[args.command](args, out, err)
    except ThingModelError as exc:
        err.print(str(exc), markup=False)
        return 1
    except KeyboardInterrupt:
        return 130


# --------------------------------------------------------------------------- validate


def _validate(args: argparse.Namespace, out: Console, err: Console) -> int:
    from thing_models.composition import FolderModelSource, flatten

    results: list[dict[str, Any]] = []
    failed = False
    for path in args.paths:
        try:
            imported = import_model(path)
            model = imported.model
            if model.extends is not None or model.components:
                flat = flatten(model, FolderModelSource(args.models_dir or path.parent))
                _check_flat_targets(flat, path)
            results.append(
                {
                    "path": str(path),
                    "ok": True,
                    "model": str(model.ref),
                    "properties": len(model.properties),
                    "events": len(model.events),
                    "services": len(model.services),
                    "bindings": list(model.bindings.protocols),
                    "notes": list(imported.notes),
                }
            )
        except ThingModelError as exc:
            failed = True
            results.append({"path": str(path), "ok": False, "errors": str(exc).splitlines()})
    if args.json:
        out.print(json.dumps(results, indent=2, ensure_ascii=False), markup=False)
    for result in results:
        if result["ok"] and not args.json:
            protocols = ", ".join(result["bindings"]) or "no bindings"
            counts = ", ".join(
                _plural(result[plural], singular, plural) for singular, plural in _AFFORDANCES
            )
            out.print(f"[green]ok[/] {result['path']}: {result['model']} ({counts}; {protocols})")
            out.file.flush()
            for note in result["notes"]:
                err.print(_note(result["path"], note), markup=False)
        elif not result["ok"]:
            for line in result["errors"]:
                err.print(line, markup=False)
    if len(args.paths) > 1 and not args.json:
        bad = sum(not r["ok"] for r in results)
        out.print(f"{len(results) - bad} valid, {bad} invalid", markup=False)
    return 1 if failed else 0


_AFFORDANCES = (("property", "properties"), ("event", "events"), ("service", "services"))


def _note(path: str, note: str) -> str:
    """``path: note: ...``, unless the importer already located the note."""
    return note if note.startswith(f"{path}: ") else f"{path}: note: {note}"


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def _check_flat_targets(flat: ThingModel, path: Path) -> None:
    """After composition, every binding must name a property of the flat model."""
    from thing_models.errors import Diagnostic, ModelLoadError, SourceLocation

    known = {p.id for p in flat.properties}
    problems = []
    for protocol in flat.bindings.protocols:
        for point in getattr(flat.bindings, protocol).points:
            if point.property not in known:
                problems.append(
                    Diagnostic(
                        SourceLocation(str(path)),
                        f"{protocol} binding names a property that the "
                        "model and its parents/components lack",
                        f"bindings.{protocol}",
                        point.property,
                    )
                )
    if problems:
        raise ModelLoadError(problems)


# --------------------------------------------------------------------------- convert


def _placeholders(pairs: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"thing-model convert: --set expects NAME=VALUE, got {pair!r}")
        values[name] = value
    return values


def _convert(args: argparse.Namespace, out: Console, err: Console) -> int:
    imported: Imported = import_model(
        args.path,
        placeholders=_placeholders(args.set),
        ref_dir=args.ref_dir,
        allow_unresolved=args.allow_unresolved,
    )
    target: ExportFormat = args.to
    exported: Exported = export_model(imported.model, target)
    for note in imported.notes:
        err.print(_note(str(args.path), note), markup=False)
    for loss in exported.losses:
        err.print(f"{args.path}: warning: {target} cannot express {loss}", markup=False)
    if args.strict and exported.losses:
        err.print(
            f"{args.path}: error: {len(exported.losses)} part(s) not expressible in "
            f"{target} (--strict)",
            markup=False,
        )
        return 1
    if target == "yaml":
        text = dump_yaml(exported.document)
    else:
        text = json.dumps(exported.document, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        err.print(f"wrote {args.output} ({target})", markup=False)
    else:
        sys.stdout.write(text)
    return 0


# --------------------------------------------------------------------------- diff


def _diff(args: argparse.Namespace, out: Console, err: Console) -> int:
    from thing_models.diff import Severity, check_version_bump, diff_models

    old = import_model(args.old).model
    new = import_model(args.new).model
    result = diff_models(old, new)
    if args.json:
        out.print(
            json.dumps(
                {
                    "old": str(old.ref),
                    "new": str(new.ref),
                    "required": result.required.name.lower(),
                    "declared": result.declared.name.lower(),
                    "ok": result.ok,
                    "changes": [
                        {
                            "severity": c.severity.name.lower(),
                            "path": c.path,
                            "description": c.description,
                        }
                        for c in result.changes
                    ],
                },
                indent=2,
                ensure_ascii=False,
            ),
            markup=False,
        )
    else:
        table = Table(title=f"{old.ref} -> {new.ref}")
        table.add_column("bump")
        table.add_column("where", overflow="fold")
        table.add_column("change", overflow="fold")
        colours = {Severity.MAJOR: "red", Severity.MINOR: "yellow", Severity.PATCH: "cyan"}
        for change in result.changes:
            colour = colours.get(change.severity, "white")
            table.add_row(
                f"[{colour}]{change.severity.name.lower()}[/]", change.path, change.description
            )
        if result.changes:
            out.print(table)
        else:
            out.print("no changes")
        out.print(
            f"required bump: {result.required.name.lower()}; declared: "
            f"{result.declared.name.lower()}"
        )
    check_version_bump(result)
    return 0


# --------------------------------------------------------------------------- new


def _new(args: argparse.Namespace, out: Console, err: Console) -> int:
    if not MODEL_NAME_RE.match(args.name):
        err.print(
            f"thing-model new: invalid name {args.name!r}; expected namespace/name, e.g. "
            "com.acme.energy/meter-3p",
            markup=False,
        )
        return 2
    text = scaffold(args.name, args.protocol)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    if args.output.exists() and not args.force:
        err.print(f"thing-model new: {args.output} exists (use --force to overwrite)", markup=False)
        return 1
    args.output.write_text(text, encoding="utf-8")
    err.print(
        f"wrote {args.output}; check it with: thing-model validate {args.output}", markup=False
    )
    return 0


_BINDINGS = {
    "modbus": """  modbus:
    unit_id: 1
    addressing: zero-based      # addresses are PDU addresses (register 40001 -> 0)
    points:
      - {property: temperature, table: input_register, address: 0, type: int16, scale: 0.1}
      - {property: enabled, table: coil, address: 0, type: bit}
""",
    "bacnet": """  bacnet:
    points:
      - {property: temperature, object_type: analog-input, instance: 1, cov_increment: 0.1}
      - {property: enabled, object_type: binary-value, instance: 1, write_priority: 8}
""",
    "mqtt": """  mqtt:
    points:
      - {property: temperature, topic: "sensors/{device_id}/state", path: $.temperature}
      - {property: enabled, topic: "sensors/{device_id}/state", path: $.enabled}
    command_topic: "sensors/{device_id}/set"
""",
    "coap": """  coap:
    points:
      - {property: temperature, resource: /sensors/temperature, mode: observe}
      - {property: enabled, resource: /config/enabled, mode: poll}
""",
}


def scaffold(name: str, protocol: str) -> str:
    """A small, valid model to start from."""
    title = name.rsplit("/", 1)[1].replace("-", " ").capitalize()
    text = f"""# Thing model: see docs/model-format.md for every key.
model: {name}
version: "0.1.0"
title: {title}
description: Describe the device type here.
vendor: Your company

properties:
  - {{id: temperature, title: Temperature, type: float, min: -40, max: 85, unit: °C}}
  - {{id: enabled, title: Enabled, type: bool, access: rw}}

events:
  - id: fault
    level: error
    outputs:
      - {{id: code, type: int32, min: 0}}

services:
  - id: reboot
    call: async
"""
    if protocol != "none":
        text += f"""
bindings:
  reporting:
    default: {{poll_interval: 10s, on_change: true, deadband: 0.2, heartbeat: 5m}}
{_BINDINGS[protocol]}"""
    return text


# --------------------------------------------------------------------------- schema


def _schema(args: argparse.Namespace, out: Console, err: Console) -> int:
    from thing_models.messages import message_json_schema

    sys.stdout.write(json.dumps(message_json_schema(), indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
