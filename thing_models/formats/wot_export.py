"""Our :class:`ThingModel` written as a W3C WoT Thing Model or Thing Description (1.1).

See :mod:`thing_models.formats.wot` for the mapping; terms WoT lacks are written in our ``tmx:``
vocabulary, so nothing is dropped: what a TD cannot say at all is listed in ``losses``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from thing_models.formats import Exported
from thing_models.formats.wot_modbus import BINDING_TERM, ModbusForms, modbus_to_wot
from thing_models.formats.wot_plain import to_plain
from thing_models.formats.wot_schema import fields_to_wot, schema_terms
from thing_models.formats.wot_terms import (
    MODV_IRI,
    TD_CONTEXT_V11,
    TM_TYPE,
    TMX,
    TMX_IRI,
)
from thing_models.model import (
    Access,
    CallType,
    Component,
    Event,
    EventLevel,
    ModelRef,
    Property,
    Reporting,
    Service,
    ThingModel,
)

__all__ = [
    "EXTENSION_KEYS",
    "HREFS_EXT",
    "WOT_EXT",
    "default_href",
    "model_to_wot",
    "placeholder_form",
]

#: Keys of ``ThingModel.extensions`` this format owns: WoT terms to restore, reference hrefs.
WOT_EXT = "wot"
HREFS_EXT = "wot_hrefs"
EXTENSION_KEYS = (WOT_EXT, HREFS_EXT)
_SECTIONS = ("properties", "actions", "events")
_NOSEC = {"nosec_sc": {"scheme": "nosec"}}


def default_href(ref: ModelRef) -> str:
    """The href written for a reference to one of our models: ``<name>@<version>.tm.jsonld``."""
    return f"{ref}.tm.jsonld"


def model_to_wot(
    model: ThingModel, *, kind: Literal["tm", "td"], base: str | None = None
) -> Exported:
    """``model`` as a Thing Model (``kind="tm"``) or Thing Description (``kind="td"``)."""
    if kind not in ("tm", "td"):
        raise ValueError(f"kind must be 'tm' or 'td', not {kind!r}")
    losses: list[str] = []
    stored = _mapping(model.extensions.get(WOT_EXT), "extensions.wot", losses)
    hrefs = _mapping(model.extensions.get(HREFS_EXT), "extensions.wot_hrefs", losses)
    td = kind == "td"
    doc: dict[str, Any] = {}
    extra_types = [t for t in _as_list(stored.get("@type")) if t != TM_TYPE]
    types = extra_types if td else [TM_TYPE, *extra_types]
    if types:
        doc["@type"] = types[0] if len(types) == 1 else types
    if model.title or td:
        doc["title"] = model.title or model.name
    if model.description:
        doc["description"] = model.description
    doc["version"] = {**_mapping(stored.get("version"), "extensions.wot.version", losses)}
    doc["version"]["instance" if td else "model"] = str(model.version)
    doc[f"{TMX}:name"] = model.name
    if model.vendor:
        doc[f"{TMX}:vendor"] = model.vendor
    links = _links(model, td, hrefs, losses) + _as_list(stored.get("links"))
    if links:
        doc["links"] = links
    modbus = modbus_to_wot(model, model.bindings.modbus) if model.bindings.modbus else None
    doc.update(_affordances(model, modbus, stored, losses))
    optional = [f"/properties/{p.id}" for p in model.properties if not p.required]
    optional += _as_list(stored.get("tm:optional"))
    if optional:
        doc["tm:optional" if not td else f"{TMX}:optional"] = optional
    if modbus is not None:
        doc[BINDING_TERM] = modbus.binding
    _put_bindings(doc, model)
    others = _extensions(model.extensions, "extensions", losses, skip=EXTENSION_KEYS)
    if others:
        doc[f"{TMX}:extensions"] = others
    for key, value in stored.items():
        if key in doc or key in ("@context", "@type", "links", "tm:optional", *_SECTIONS):
            if key not in ("@context", "@type", "links", "tm:optional", "version", *_SECTIONS):
                losses.append(f"extensions.wot.{key} (the model's own value is written)")
            continue
        doc[key] = value
    if base is not None:
        doc["base"] = base
    if td:
        _complete_td(doc)
    doc["@context"] = _context(stored.get("@context"), doc)
    return Exported(document=doc, losses=tuple(losses))


# --------------------------------------------------------------------------- document parts


def _links(
    model: ThingModel, td: bool, hrefs: Mapping[str, Any], losses: list[str]
) -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = []
    if model.extends is not None:
        if td:
            losses.append(
                f"extends {model.extends} (a TD cannot use tm:extends: export the resolved model)"
            )
        else:
            href = hrefs.get("tm:extends", default_href(model.extends))
            links.append(_link("tm:extends", href, model.extends))
    for comp in model.components:
        href = hrefs.get(comp.instance, default_href(comp.model))
        links.append(_component_link(comp, href, td))
    return links


def _link(rel: str, href: str, ref: ModelRef) -> dict[str, Any]:
    return {"rel": rel, "href": href, "type": "application/tm+json", f"{TMX}:model": str(ref)}


def _component_link(comp: Component, href: str, td: bool) -> dict[str, Any]:
    link = _link("item" if td else "tm:submodel", href, comp.model)
    if td:
        link["type"] = "application/td+json"
    link["instanceName"] = comp.instance
    if comp.title:
        link[f"{TMX}:title"] = comp.title
    if comp.description:
        link[f"{TMX}:description"] = comp.description
    return link


def _affordances(
    model: ThingModel, modbus: ModbusForms | None, stored: Mapping[str, Any], losses: list[str]
) -> dict[str, Any]:
    props = {p.id: _property(p, modbus, losses) for p in model.properties}
    actions = {s.id: _action(s, modbus, losses) for s in model.services}
    events = {e.id: _event(e, losses) for e in model.events}
    out: dict[str, Any] = {}
    for section, items in zip(_SECTIONS, (props, actions, events), strict=True):
        raw = _mapping(stored.get(section), f"extensions.wot.{section}", losses)
        items.update({k: v for k, v in raw.items() if k not in items})  # kept unresolved ones
        if items:
            out[section] = items
    return out


def _head(title: str, description: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if title:
        out["title"] = title
    if description:
        out["description"] = description
    return out


def _property(prop: Property, modbus: ModbusForms | None, losses: list[str]) -> dict[str, Any]:
    out = _head(prop.title, prop.description)
    out.update(schema_terms(prop.schema))
    if prop.access is Access.READ:
        out["readOnly"] = True
    forms = modbus.properties.get(prop.id, []) if modbus else []
    return _finish(out, prop.extensions, forms, f"properties.{prop.id}", losses)


def _action(service: Service, modbus: ModbusForms | None, losses: list[str]) -> dict[str, Any]:
    out = _head(service.title, service.description)
    out["synchronous"] = service.call_type is CallType.SYNC
    if service.inputs:
        out["input"] = fields_to_wot(service.inputs)
    if service.outputs:
        out["output"] = fields_to_wot(service.outputs)
    forms = modbus.actions.get(service.id, []) if modbus else []
    return _finish(out, service.extensions, forms, f"services.{service.id}", losses)


def _event(event: Event, losses: list[str]) -> dict[str, Any]:
    out = _head(event.title, event.description)
    if event.level is not EventLevel.INFO:
        out[f"{TMX}:level"] = event.level.value
    if event.outputs:
        out["data"] = fields_to_wot(event.outputs)
    return _finish(out, event.extensions, [], f"events.{event.id}", losses)


def _finish(
    out: dict[str, Any],
    extensions: Mapping[str, Any],
    forms: list[dict[str, Any]],
    where: str,
    losses: list[str],
) -> dict[str, Any]:
    """Add the affordance's kept WoT terms, other extensions and forms."""
    others = _extensions(extensions, f"{where}.extensions", losses, skip=(WOT_EXT,))
    if others:
        out[f"{TMX}:extensions"] = others
    stored = _mapping(extensions.get(WOT_EXT), f"{where}.extensions.wot", losses)
    for key, value in stored.items():
        if key == "forms":
            forms = forms + _as_list(value)
        elif key in out:
            losses.append(f"{where}.extensions.wot.{key} (the model's own value is written)")
        else:
            out[key] = value
    if forms:
        out["forms"] = forms
    return out


def _put_bindings(doc: dict[str, Any], model: ThingModel) -> None:
    bindings = model.bindings
    for name in ("bacnet", "mqtt", "coap"):
        value = getattr(bindings, name)
        if value is not None:
            doc[f"{TMX}:{name}"] = to_plain(value)
    if bindings.reporting != Reporting():
        doc[f"{TMX}:reporting"] = to_plain(bindings.reporting)


def _complete_td(doc: dict[str, Any]) -> None:
    """What a TD requires: security, and a form on every affordance."""
    doc.setdefault("securityDefinitions", dict(_NOSEC))
    if "security" not in doc:
        doc["security"] = next(iter(doc["securityDefinitions"]), "nosec_sc")
    for section in _SECTIONS:
        for name, affordance in doc.get(section, {}).items():
            if isinstance(affordance, dict) and not affordance.get("forms"):
                affordance["forms"] = [placeholder_form(section, name)]


def placeholder_form(section: str, name: str) -> dict[str, Any]:
    """The form a TD gets for an affordance no binding serves (relative to ``base``)."""
    return {"href": f"{section}/{name}"}


def _context(stored: Any, doc: dict[str, Any]) -> Any:
    context = _as_list(stored) if stored is not None else [TD_CONTEXT_V11]
    declared = {k for item in context if isinstance(item, dict) for k in item}
    needed = {p: iri for p, iri in (("modv", MODV_IRI), (TMX, TMX_IRI)) if _uses(doc, p)}
    missing = {p: iri for p, iri in needed.items() if p not in declared}
    if missing:
        context.append(missing)
    return context[0] if len(context) == 1 else context


def _uses(node: Any, prefix: str) -> bool:
    stack = [node]
    mark = f"{prefix}:"
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any(isinstance(k, str) and k.startswith(mark) for k in item):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# --------------------------------------------------------------------------- helpers


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _mapping(value: Any, where: str, losses: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    losses.append(f"{where} (not a mapping)")
    return {}


def _extensions(
    extensions: Mapping[str, Any], where: str, losses: list[str], skip: tuple[str, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in extensions.items():
        if key in skip:
            continue
        if _is_json(value, 0):
            out[str(key)] = value
        else:
            losses.append(f"{where}.{key} (not JSON data)")
    return out


def _is_json(value: Any, depth: int) -> bool:
    if depth > 64:
        return False
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    return False
