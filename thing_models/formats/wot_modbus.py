"""Modbus bindings and WoT forms in the ``modv:`` vocabulary: the terms, and the export.

Service writes become ``invokeaction`` forms on their actions (``tmx:write`` holds the fixed
value or the input parameter); points whose property is not an affordance of the model, and
the order of points when it is not the affordances' order, go in ``tmx:modbus`` too.
Import (:mod:`thing_models.formats.wot_modbus_import`) reads ``modv:`` terms and the legacy
``modbus:`` prefix alike (``entity``, ``function`` by name or code, ``address``,
``quantity``, ``unitID``, ``type``, ``pollingTime`` in ms, ``zeroBasedAddressing``,
``mostSignificantByte``/``Word``), with the address, unit and quantity taken from the href
(``modbus+tcp://host:502/<unit>/<address>?quantity=<n>``) when not given as terms. Forms of
one property that share entity, address and unit make one point (the read form's function is
``read_function``, the write form's ``write_function``). Without ``modv:zeroBasedAddressing``
an address is used as given, as node-wot does.

Export writes one form per point (two when a function is pinned: a read and a write form),
self-contained for WoT consumers; what ``modv:`` cannot say (scaling, masks, enum maps,
explicit overrides, report policy...) goes in ``tmx:point`` on the form, and binding-wide
settings in the top-level ``tmx:modbus`` object. Its presence marks our own export: then a
term missing from ``tmx:point`` means the field's default, so the model reads back equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thing_models.formats.wot_plain import to_plain
from thing_models.formats.wot_terms import TMX, child
from thing_models.model import (
    Access,
    ByteOrder,
    ModbusBinding,
    ModbusPoint,
    ModbusServiceWrite,
    ModbusTable,
    ModbusType,
    ThingModel,
)

__all__ = [
    "BINDING_TERM",
    "BY_SIZE",
    "ENTITIES",
    "FORM_FIELDS",
    "FUNCTIONS",
    "FUNCTION_TABLE",
    "POINT_TERM",
    "TOP_PATH",
    "WRITE_CODES",
    "WRITE_FIELDS",
    "WRITE_TERM",
    "ModbusForms",
    "is_modbus_form",
    "modbus_to_wot",
    "term",
    "xsd_type",
]

BINDING_TERM = f"{TMX}:modbus"
POINT_TERM = f"{TMX}:point"
WRITE_TERM = f"{TMX}:write"

ENTITIES = {
    "Coil": ModbusTable.COIL,
    "DiscreteInput": ModbusTable.DISCRETE_INPUT,
    "InputRegister": ModbusTable.INPUT_REGISTER,
    "HoldingRegister": ModbusTable.HOLDING_REGISTER,
}
_ENTITY_NAMES = {table: name for name, table in ENTITIES.items()}
FUNCTIONS = {
    "readCoil": 1,
    "readDiscreteInput": 2,
    "readHoldingRegisters": 3,
    "readInputRegisters": 4,
    "writeSingleCoil": 5,
    "writeSingleHoldingRegister": 6,
    "writeMultipleCoils": 15,
    "writeMultipleHoldingRegisters": 16,
    "readFileRecord": 20,
}
_FUNCTION_NAMES = {code: name for name, code in FUNCTIONS.items()}
WRITE_CODES = frozenset({5, 6, 15, 16})
FUNCTION_TABLE = {
    1: ModbusTable.COIL,
    5: ModbusTable.COIL,
    15: ModbusTable.COIL,
    2: ModbusTable.DISCRETE_INPUT,
    3: ModbusTable.HOLDING_REGISTER,
    6: ModbusTable.HOLDING_REGISTER,
    16: ModbusTable.HOLDING_REGISTER,
    4: ModbusTable.INPUT_REGISTER,
}
_XSD = {
    ModbusType.BIT: "xsd:boolean",
    ModbusType.INT8: "xsd:byte",
    ModbusType.UINT8: "xsd:unsignedByte",
    ModbusType.INT16: "xsd:short",
    ModbusType.UINT16: "xsd:unsignedShort",
    ModbusType.INT32: "xsd:int",
    ModbusType.UINT32: "xsd:unsignedInt",
    ModbusType.INT64: "xsd:long",
    ModbusType.UINT64: "xsd:unsignedLong",
    ModbusType.FLOAT16: "xsd:decimal",
    ModbusType.FLOAT32: "xsd:float",
    ModbusType.FLOAT64: "xsd:double",
    ModbusType.STRING: "xsd:string",
    ModbusType.BYTES: "xsd:hexBinary",
}
_FROM_XSD = {xsd: kind for kind, xsd in _XSD.items() if kind is not ModbusType.FLOAT16}
BY_SIZE = {
    "integer": {1: ModbusType.INT16, 2: ModbusType.INT32, 4: ModbusType.INT64},
    "number": {1: ModbusType.FLOAT16, 2: ModbusType.FLOAT32, 4: ModbusType.FLOAT64},
}
#: Point fields carried by ``modv:`` terms (the rest go to ``tmx:point``).
FORM_FIELDS = ("property", "table", "address", "type", "read_function", "write_function")
WRITE_FIELDS = ("service", "table", "address", "type", "write_function")
_CONTENT_TYPE = "application/octet-stream"
TOP_PATH = child("$", BINDING_TERM)


def term(form: dict[str, Any], name: str) -> tuple[str, Any]:
    for key in (f"modv:{name}", f"modbus:{name}"):
        if key in form:
            return key, form[key]
    return f"modv:{name}", None


def is_modbus_form(form: Any) -> bool:
    """True for a form using the Modbus binding (``modv:``/``modbus:`` terms or scheme)."""
    if not isinstance(form, dict):
        return False
    href = form.get("href")
    if isinstance(href, str) and href.lower().startswith("modbus"):
        return True
    return any(str(k).startswith(("modv:", "modbus:")) for k in form)


def xsd_type(xsd: str, quantity: int | None) -> ModbusType | None:
    if xsd in _FROM_XSD:
        return _FROM_XSD[xsd]
    size = {"xsd:integer": "integer", "xsd:decimal": "number"}.get(xsd)
    if size is not None:
        return BY_SIZE[size].get(quantity or 1)
    try:
        return ModbusType(xsd)
    except ValueError:
        return None


# --------------------------------------------------------------------------- export


@dataclass(frozen=True, slots=True)
class ModbusForms:
    """The Modbus part of an export: forms per property and per action, and ``tmx:modbus``."""

    properties: dict[str, list[dict[str, Any]]]
    actions: dict[str, list[dict[str, Any]]]
    binding: dict[str, Any]


def modbus_to_wot(model: ThingModel, binding: ModbusBinding) -> ModbusForms:
    """Forms for every point and service write of ``binding``; the rest in ``tmx:modbus``."""
    prop_index = {p.id: i for i, p in enumerate(model.properties)}
    service_index = {s.id: i for i, s in enumerate(model.services)}
    top = {k: v for k, v in to_plain(binding).items() if k not in ("points", "services")}
    properties: dict[str, list[dict[str, Any]]] = {}
    points = _natural(binding.points, lambda p: prop_index.get(p.property))
    for point in points.placed:
        prop = model.property(point.property)
        writable = prop is not None and prop.access is Access.READ_WRITE
        properties.setdefault(point.property, []).extend(_point_forms(binding, point, writable))
    actions: dict[str, list[dict[str, Any]]] = {}
    writes = _natural(binding.services, lambda w: service_index.get(w.service))
    for write in writes.placed:
        actions.setdefault(write.service, []).append(_write_form(binding, write))
    if points.orphans:
        top["points"] = [to_plain(p) for p in points.orphans]
    if writes.orphans:
        top["services"] = [to_plain(w) for w in writes.orphans]
    if points.order is not None:
        top["pointOrder"] = points.order
    if writes.order is not None:
        top["serviceOrder"] = writes.order
    return ModbusForms(properties, actions, top)


@dataclass(frozen=True, slots=True)
class _Arranged:
    placed: list[Any]
    orphans: list[Any]
    order: list[int] | None


def _natural(items: tuple[Any, ...], rank: Any) -> _Arranged:
    """Items in the order an import rebuilds them (by affordance, orphans last), and the
    permutation back to their own order when that differs."""
    natural = sorted(range(len(items)), key=lambda i: (rank(items[i]) is None, rank(items[i]) or 0))
    placed = [items[i] for i in natural if rank(items[i]) is not None]
    orphans = [items[i] for i in natural if rank(items[i]) is None]
    position = {original: pos for pos, original in enumerate(natural)}
    order = [position[i] for i in range(len(items))]
    return _Arranged(placed, orphans, None if order == sorted(order) else order)


def _common(binding: ModbusBinding, table: ModbusTable, address: int, unit: int) -> dict[str, Any]:
    return {
        "href": f"/{unit}/{address}",
        "contentType": _CONTENT_TYPE,
        "modv:entity": _ENTITY_NAMES[table],
        "modv:address": address,
        "modv:unitID": unit,
        "modv:zeroBasedAddressing": binding.zero_based,
    }


def _function(code: int) -> str | int:
    return _FUNCTION_NAMES.get(code, code)


def _point_forms(
    binding: ModbusBinding, point: ModbusPoint, writable: bool
) -> list[dict[str, Any]]:
    quantity = point.register_count
    form = _common(binding, point.table, point.address, point.unit_id or binding.unit_id)
    form["href"] += f"?quantity={quantity}"
    form["modv:quantity"] = quantity
    form["modv:type"] = _XSD[point.type]
    if not point.table.is_bit_table:
        form["modv:mostSignificantByte"] = (point.byte_order or binding.byte_order) is ByteOrder.BIG
        form["modv:mostSignificantWord"] = (point.word_order or binding.word_order) is ByteOrder.BIG
    if point.report is not None and point.report.poll_interval_s is not None:
        form["modv:pollingTime"] = point.report.poll_interval_s * 1000
    extra = {k: v for k, v in to_plain(point).items() if k not in FORM_FIELDS}
    if xsd_type(form["modv:type"], quantity) is not point.type:
        extra["type"] = point.type.value
    if extra:
        form[POINT_TERM] = extra
    can_write = writable and point.table.writable
    pinned = point.read_function is not None or point.write_function is not None
    if not pinned:
        return [{**form, "op": ["readproperty", "writeproperty"] if can_write else "readproperty"}]
    read = {**form, "op": "readproperty"}
    if point.read_function is not None:
        read["modv:function"] = _function(point.read_function)
    forms = [read]
    if can_write or point.write_function is not None:
        write = {**form, "op": "writeproperty"}
        if point.write_function is not None:
            write["modv:function"] = _function(point.write_function)
        forms.append(write)
    return forms


def _write_form(binding: ModbusBinding, write: ModbusServiceWrite) -> dict[str, Any]:
    form = _common(binding, write.table, write.address, binding.unit_id)
    form["op"] = "invokeaction"
    form["modv:type"] = _XSD[write.type]
    if write.write_function is not None:
        form["modv:function"] = _function(write.write_function)
    extra = {k: v for k, v in to_plain(write).items() if k not in WRITE_FIELDS}
    if xsd_type(form["modv:type"], write.type.register_count) is not write.type:
        extra["type"] = write.type.value
    if extra:
        form[WRITE_TERM] = extra
    return form
