"""A W3C WoT Thing Model or Thing Description (1.1) read into our :class:`ThingModel`.

See :mod:`thing_models.formats.wot` for the mapping. Every problem is collected with its JSON
path and raised together (:class:`ModelLoadError`); approximations become ``Imported.notes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from thing_models.errors import (
    Diagnostic,
    ModelLoadError,
    SourceLocation,
    UnresolvedReferenceError,
)
from thing_models.formats import Imported
from thing_models.formats.wot_export import HREFS_EXT, WOT_EXT, placeholder_form
from thing_models.formats.wot_links import Links, identity, parse_version, read_links
from thing_models.formats.wot_modbus import BINDING_TERM
from thing_models.formats.wot_modbus_import import (
    ModbusAffordance,
    modbus_from_wot,
)
from thing_models.formats.wot_plain import from_plain
from thing_models.formats.wot_refs import Resolver, Unresolved, guard, load_json, substitute
from thing_models.formats.wot_schema import fields_from_wot, schema_from_wot
from thing_models.formats.wot_terms import (
    MODV_IRI,
    TD_CONTEXT_V11,
    TM_TYPE,
    TMX,
    TMX_IRI,
    Ctx,
    child,
    sanitize_identifier,
)
from thing_models.formats.wot_terms import TM_TYPE_IRI as _TM_IRI
from thing_models.model import (
    IDENTIFIER_RE,
    MODEL_NAME_RE,
    Access,
    BacnetBinding,
    Bindings,
    CallType,
    CoapBinding,
    Event,
    EventLevel,
    Field,
    MqttBinding,
    Property,
    Reporting,
    SemVer,
    Service,
    ThingModel,
)

__all__ = ["import_wot"]

_TOP_TERMS = frozenset(
    {"@context", "@type", "title", "description", "version", "properties", "actions", "events"}
    | {"links", "tm:optional", f"{TMX}:optional", f"{TMX}:name", f"{TMX}:vendor", BINDING_TERM}
    | {f"{TMX}:extensions", f"{TMX}:bacnet", f"{TMX}:mqtt", f"{TMX}:coap", f"{TMX}:reporting"}
)
_SECTIONS = ("properties", "actions", "events")
_OBJECT_TERMS = frozenset({"type", "properties", "required", "title", "description"})


def import_wot(
    doc: Any,
    *,
    source: str,
    placeholders: Mapping[str, str] | None,
    ref_dir: Path | None,
    name: str | None,
    version: str | None,
    allow_unresolved: bool,
) -> Imported:
    """Read a TM or TD (a parsed JSON object, or JSON text) into our model."""
    if isinstance(doc, str | bytes):
        doc = load_json(doc, source)
    if not isinstance(doc, dict):
        where = SourceLocation(source)
        message = "a WoT Thing Model or Thing Description must be a JSON object"
        raise ModelLoadError([Diagnostic(where, message, "$", type(doc).__name__)])
    guard(doc, source)
    tm = _is_tm(doc.get("@type"))
    ctx = Ctx(source, tm=tm)
    values = dict(placeholders or {})
    if tm:
        doc = substitute(doc, values, ctx)
    elif values:
        ctx.note("$", "placeholders apply to Thing Models only; this is a Thing Description")
    resolver = Resolver(ctx, ref_dir, values)
    doc = resolver.expand(doc)
    links = read_links(ctx, resolver, doc)
    if resolver.unresolved:
        if not allow_unresolved:
            raise _unresolved_error(resolver.unresolved, source)
        for miss in resolver.unresolved:
            ctx.note(miss.path, f"unresolved reference {miss.reference!r} ({miss.reason}); kept")
    reader = _Reader(ctx, doc, tm, resolver.unresolved)
    model = reader.model(links, name, version)
    ctx.raise_errors()
    return Imported(model, tuple(ctx.notes))


def _is_tm(types: Any) -> bool:
    items = types if isinstance(types, list) else [types]
    return TM_TYPE in items or _TM_IRI in items


def _unresolved_error(missing: list[Unresolved], source: str) -> UnresolvedReferenceError:
    refs = ", ".join(dict.fromkeys(m.reference for m in missing))
    detail = (
        f"{len(missing)} reference(s) not resolved; remote documents are never fetched: put "
        "files of the same names in ref_dir, or pass allow_unresolved=True: "
        + "; ".join(str(m) for m in missing)
    )
    return UnresolvedReferenceError(refs, detail, SourceLocation(source))


# --------------------------------------------------------------------------- the document


@dataclass(slots=True)
class _Pending:
    """An affordance read but for its extensions (set once the Modbus forms are known)."""

    section: str
    key: str
    item: Property | Service | Event
    kept: dict[str, Any]
    forms: list[Any]


class _Reader:
    def __init__(
        self, ctx: Ctx, doc: dict[str, Any], tm: bool, unresolved: list[Unresolved]
    ) -> None:
        self.ctx, self.doc, self.tm = ctx, doc, tm
        self.unresolved_paths = [u.path for u in unresolved]
        self.stored: dict[str, Any] = {}

    def model(self, links: Links, name: str | None, version: str | None) -> ThingModel:
        ctx, doc = self.ctx, self.doc
        model_name, version_text = identity(ctx, doc, self.tm)
        if name is not None:
            if not MODEL_NAME_RE.match(name):
                ctx.error("name", "not a model name", name, MODEL_NAME_RE.pattern)
            model_name = name
        semver = self._version(version, version_text)
        pending = [p for s in _SECTIONS for p in self._section(s)]
        optional = self._optional()
        modbus = modbus_from_wot(
            ctx, self._modbus_affordances(pending), doc.get(BINDING_TERM), doc.get("base")
        )
        props: list[Property] = []
        services: list[Service] = []
        events: list[Event] = []
        for entry in pending:
            consumed = modbus.consumed.get((_KIND[entry.section], entry.item.id), set())
            item = self._finish(entry, consumed)
            if isinstance(item, Property):
                props.append(replace(item, required=entry.key not in optional))
            elif isinstance(item, Service):
                services.append(item)
            else:
                events.append(item)
        self._keep_top(links)
        extensions = self._extensions(links)
        return ThingModel(
            name=model_name,
            version=semver,
            title=ctx.get_str(doc, "title", "$") or "",
            description=ctx.get_str(doc, "description", "$") or "",
            vendor=ctx.get_str(doc, f"{TMX}:vendor", "$") or "",
            extends=links.extends,
            components=tuple(links.components),
            properties=tuple(props),
            events=tuple(events),
            services=tuple(services),
            bindings=self._bindings(modbus.binding),
            extensions=extensions,
        )

    def _version(self, override: str | None, text: str) -> SemVer:
        if override is not None:
            try:
                return SemVer.parse(override)
            except ValueError as exc:
                self.ctx.error("version", str(exc), override)
                return SemVer(0, 0, 0)
        semver = parse_version(text) if text else None
        if semver is None:
            why = f"version {text!r} is not semantic" if text else "no version given"
            self.ctx.note("$.version", f"{why}; using 0.0.0")
        return semver or SemVer(0, 0, 0)

    # ------------------------------------------------------------------ affordances

    def _section(self, section: str) -> list[_Pending]:
        raw = self.ctx.get_obj(self.doc, section, "$") or {}
        out: list[_Pending] = []
        seen: set[str] = set()
        for key, value in raw.items():
            path = child(child("$", section), key)
            if not isinstance(value, dict):
                self.ctx.error(path, "wrong type", value, "an affordance (a JSON object)")
                continue
            if self._is_unresolved(path):
                self.stored.setdefault(section, {})[key] = value
                continue
            ident = key
            if not IDENTIFIER_RE.match(key):
                ident = sanitize_identifier(key)
                self.ctx.note(path, f"name {key!r} is not an identifier; renamed {ident!r}")
            if ident in seen:
                self.ctx.error(path, f"duplicate {section} name {ident!r}", key)
                continue
            seen.add(ident)
            out.append(self._affordance(section, key, ident, value, path))
        return out

    def _is_unresolved(self, path: str) -> bool:
        return any(
            p == path or p.startswith((f"{path}.", f"{path}[")) for p in self.unresolved_paths
        )

    def _affordance(
        self, section: str, key: str, ident: str, raw: dict[str, Any], path: str
    ) -> _Pending:
        ctx = self.ctx
        title = ctx.get_str(raw, "title", path) or ""
        text = ctx.get_str(raw, "description", path) or ""
        used = {"title", "description", "forms", f"{TMX}:extensions"}
        item: Property | Service | Event
        if section == "properties":
            schema, schema_used = schema_from_wot(ctx, raw, path, nested=False)
            used |= schema_used | {"readOnly", "writeOnly"}
            item = Property(ident, schema, title, text, access=self._access(raw, path))
        elif section == "actions":
            used |= {"synchronous", "input", "output"}
            sync = ctx.get_bool(raw, "synchronous", path)
            inputs = self._fields(raw, "input", path)
            outputs = self._fields(raw, "output", path)
            call = CallType.SYNC if sync else CallType.ASYNC
            item = Service(ident, call, inputs, outputs, title, text)
        else:
            used |= {"data", f"{TMX}:level"}
            level = self._level(raw, path)
            item = Event(ident, level, self._fields(raw, "data", path), title, text)
        kept = {k: v for k, v in raw.items() if k not in used}
        forms = ctx.get_list(raw, "forms", path) or []
        return _Pending(section, key, item, kept, forms)

    def _access(self, raw: dict[str, Any], path: str) -> Access:
        read_only = self.ctx.get_bool(raw, "readOnly", path)
        write_only = self.ctx.get_bool(raw, "writeOnly", path)
        if read_only:
            if write_only:
                self.ctx.error(path, "readOnly and writeOnly are both true", raw.get("readOnly"))
            return Access.READ
        if write_only:
            self.ctx.note(path, "write-only property read as read-write (we have no write-only)")
        return Access.READ_WRITE

    def _level(self, raw: dict[str, Any], path: str) -> EventLevel:
        value = raw.get(f"{TMX}:level")
        if value is None:
            return EventLevel.INFO
        try:
            return EventLevel(value)
        except ValueError:
            choices = ", ".join(level.value for level in EventLevel)
            self.ctx.error(child(path, f"{TMX}:level"), "unknown event level", value, choices)
            return EventLevel.INFO

    def _fields(self, raw: dict[str, Any], key: str, path: str) -> tuple[Field, ...]:
        schema = self.ctx.get_obj(raw, key, path)
        if not schema:
            return ()
        where = child(path, key)
        if schema.get("type") == "object" or "properties" in schema:
            ignored = sorted(set(schema) - _OBJECT_TERMS)
            if ignored:
                self.ctx.note(where, f"terms {', '.join(ignored)} ignored")
            return fields_from_wot(self.ctx, schema, where)
        inner, _ = schema_from_wot(self.ctx, schema, where)
        self.ctx.note(where, "not an object schema; read as one field named 'value'")
        title = schema.get("title") if isinstance(schema.get("title"), str) else ""
        return (Field("value", inner, str(title)),)

    def _modbus_affordances(self, pending: list[_Pending]) -> list[ModbusAffordance]:
        out = []
        for entry in pending:
            if entry.section != "events" and entry.forms:
                path = child(child(child("$", entry.section), entry.key), "forms")
                wot_type = self.doc[entry.section][entry.key].get("type")
                out.append(
                    ModbusAffordance(
                        _KIND[entry.section], entry.item.id, entry.forms, path, wot_type
                    )
                )
        return out

    def _finish(self, entry: _Pending, consumed: set[int]) -> Property | Service | Event:
        path = child(child("$", entry.section), entry.key)
        extensions: dict[str, Any] = {}
        others = self.ctx.get_obj(self.doc[entry.section][entry.key], f"{TMX}:extensions", path)
        extensions.update(others or {})
        placeholder = placeholder_form(entry.section, entry.key)
        forms = [f for i, f in enumerate(entry.forms) if i not in consumed and f != placeholder]
        kept = dict(entry.kept)
        if forms:
            kept["forms"] = forms
        if kept:
            extensions[WOT_EXT] = kept
        return replace(entry.item, extensions=extensions)

    def _optional(self) -> set[str]:
        """Property names listed in ``tm:optional`` (others are kept for the export)."""
        key = "tm:optional" if "tm:optional" in self.doc else f"{TMX}:optional"
        pointers = self.ctx.get_list(self.doc, key, "$") or []
        names: set[str] = set()
        rest = []
        for index, pointer in enumerate(pointers):
            if not isinstance(pointer, str):
                self.ctx.error(child(child("$", key), index), "wrong type", pointer, "a pointer")
            elif pointer.startswith("/properties/") and pointer.count("/") == 2:
                names.add(pointer.removeprefix("/properties/"))
            else:
                rest.append(pointer)
        if rest:
            self.stored["tm:optional"] = rest
        return names

    # ------------------------------------------------------------------ the rest

    def _keep_top(self, links: Links) -> None:
        doc = self.doc
        for key, value in doc.items():
            if key not in _TOP_TERMS:
                self.stored[key] = value
        context = _context_to_keep(doc.get("@context"))
        if context is not None:
            self.stored["@context"] = context
        types = doc.get("@type")
        rest = [t for t in (types if isinstance(types, list) else [types]) if t is not None]
        rest = [t for t in rest if t not in (TM_TYPE, _TM_IRI)]
        if rest:
            self.stored["@type"] = rest[0] if len(rest) == 1 else rest
        version = doc.get("version")
        if isinstance(version, dict):
            consumed = "model" if self.tm else "instance"
            rest_version = {k: v for k, v in version.items() if k != consumed}
            if rest_version:
                self.stored["version"] = rest_version
        if links.kept:
            self.stored["links"] = links.kept

    def _extensions(self, links: Links) -> dict[str, Any]:
        extensions: dict[str, Any] = {}
        extensions.update(self.ctx.get_obj(self.doc, f"{TMX}:extensions", "$") or {})
        if self.stored:
            extensions[WOT_EXT] = self.stored
        if links.hrefs:
            extensions[HREFS_EXT] = links.hrefs
        return extensions

    def _bindings(self, modbus: Any) -> Bindings:
        ctx, doc = self.ctx, self.doc

        def read(key: str, cls: type[Any]) -> Any:
            value = doc.get(f"{TMX}:{key}")
            return (
                None if value is None else from_plain(ctx, cls, value, child("$", f"{TMX}:{key}"))
            )

        reporting = read("reporting", Reporting) or Reporting()
        return Bindings(
            modbus=modbus,
            bacnet=read("bacnet", BacnetBinding),
            mqtt=read("mqtt", MqttBinding),
            coap=read("coap", CoapBinding),
            reporting=reporting,
        )


_KIND = {"properties": "property", "actions": "action", "events": "event"}


def _context_to_keep(context: Any) -> Any:
    """The ``@context`` to keep: without the prefixes the export adds itself; None when what
    is left is the plain TD 1.1 context."""
    items = context if isinstance(context, list) else [context]
    ours = {(TMX, TMX_IRI), ("modv", MODV_IRI)}
    kept = []
    for item in items:
        if isinstance(item, dict):
            item = {k: v for k, v in item.items() if (k, v) not in ours}
            if not item:
                continue
        kept.append(item)
    if kept in ([TD_CONTEXT_V11], [None], []):
        return None
    return kept if isinstance(context, list) else kept[0]
