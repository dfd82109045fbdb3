"""Modbus forms (``modv:`` and legacy ``modbus:`` terms) read into our :class:`ModbusBinding`.

The vocabulary and the export are in :mod:`thing_models.formats.wot_modbus`, whose docstring
describes the mapping; this module reads it back, exactly for our own exports (marked by the
top-level ``tmx:modbus``) and as faithfully as the terms allow for anyone else's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from thing_models.formats.wot_modbus import (
    BY_SIZE,
    ENTITIES,
    FORM_FIELDS,
    FUNCTION_TABLE,
    FUNCTIONS,
    POINT_TERM,
    TOP_PATH,
    WRITE_CODES,
    WRITE_FIELDS,
    WRITE_TERM,
    is_modbus_form,
    term,
    xsd_type,
)
from thing_models.formats.wot_plain import from_plain, to_plain
from thing_models.formats.wot_terms import Ctx, child
from thing_models.model import (
    ModbusBinding,
    ModbusPoint,
    ModbusServiceWrite,
    ModbusTable,
    ModbusType,
    ReportPolicy,
)

__all__ = ["ModbusAffordance", "ModbusImport", "modbus_from_wot"]


@dataclass(frozen=True, slots=True)
class _Form:
    """The Modbus terms of one form, checked."""

    path: str
    table: ModbusTable
    address: int
    unit: int | None
    quantity: int | None
    xsd: str | None
    function: int | None
    writes: bool
    zero_based: bool | None
    msb: bool | None
    msw: bool | None
    polling_ms: float | None
    extra: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ModbusAffordance:
    """The forms of one affordance for :func:`modbus_from_wot`: ``kind`` is ``property`` or
    ``action``; ``wot_type`` the affordance's WoT ``type`` (to guess a missing modv:type)."""

    kind: str
    id: str
    forms: list[Any]
    path: str
    wot_type: Any = None


@dataclass(frozen=True, slots=True)
class ModbusImport:
    binding: ModbusBinding | None
    consumed: dict[tuple[str, str], set[int]]


def modbus_from_wot(
    ctx: Ctx, affordances: list[ModbusAffordance], top: Any, base: Any
) -> ModbusImport:
    """Read the Modbus forms of ``affordances`` (and ``tmx:modbus``, ``top``) into a binding."""
    exact = isinstance(top, dict)
    if top is not None and not exact:
        ctx.error(TOP_PATH, "wrong type", top, "a JSON object")
    parsed: list[tuple[ModbusAffordance, list[_Form]]] = []
    consumed: dict[tuple[str, str], set[int]] = {}
    for aff in affordances:
        forms: list[_Form] = []
        for index, raw in enumerate(aff.forms):
            if is_modbus_form(raw):
                consumed.setdefault((aff.kind, aff.id), set()).add(index)
                form = _parse_form(ctx, raw, child(aff.path, index), base, aff.kind)
                if form is not None:
                    forms.append(form)
        if forms:
            parsed.append((aff, forms))
    if not exact and not consumed:
        return ModbusImport(None, consumed)
    binding = _binding(ctx, top if exact else {}, parsed, exact)
    points: list[ModbusPoint] = []
    writes: list[ModbusServiceWrite] = []
    for aff, forms in parsed:
        if aff.kind == "property":
            points.extend(_points(ctx, binding, aff, forms, exact))
        else:
            writes.extend(w for f in forms if (w := _write(ctx, binding, aff.id, f, exact)))
    if exact:
        points += _orphans(ctx, top, "points", ModbusPoint)
        writes += _orphans(ctx, top, "services", ModbusServiceWrite)
        points = _reorder(ctx, top, "pointOrder", points)
        writes = _reorder(ctx, top, "serviceOrder", writes)
    return ModbusImport(replace(binding, points=tuple(points), services=tuple(writes)), consumed)


def _parse_form(ctx: Ctx, form: dict[str, Any], path: str, base: Any, kind: str) -> _Form | None:
    errors = len(ctx.errors)
    key, entity = term(form, "entity")
    table = None
    if entity is not None:
        table = ENTITIES.get(entity) if isinstance(entity, str) else None
        if table is None:
            ctx.error(child(path, key), "unknown Modbus entity", entity, f"one of {list(ENTITIES)}")
    function = _read_function(ctx, form, path)
    if function is not None and function in FUNCTION_TABLE:
        implied = FUNCTION_TABLE[function]
        if table is not None and implied is not table:
            ctx.error(path, f"function {function} does not act on {entity}", form.get(key))
        table = table or implied
    if table is None and entity is None:
        ctx.error(path, "a Modbus form needs modv:entity or modv:function", sorted(form))
    href_unit, href_address, href_quantity = _from_href(ctx, form.get("href"), base, path)
    address = _intterm(ctx, form, "address", path, 0)
    address = href_address if address is None else address
    if address is None:
        ctx.error(path, "no Modbus address (modv:address or href /<unit>/<address>)")
    unit = _intterm(ctx, form, "unitID", path, 0)
    quantity = _intterm(ctx, form, "quantity", path, 1)
    key, xsd = term(form, "type")
    if xsd is not None and (not isinstance(xsd, str) or xsd_type(xsd, 1) is None):
        ctx.error(child(path, key), "unknown Modbus type", xsd, "an xsd: type or one of ours")
    key, _ = term(form, "pollingTime")
    polling_ms = ctx.get_number(form, key, path)
    if polling_ms is not None and polling_ms < 0:
        ctx.error(child(path, key), "polling time must not be negative", polling_ms)
    extra = form.get(WRITE_TERM if kind == "action" else POINT_TERM)
    if extra is not None and not isinstance(extra, dict):
        ctx.error(child(path, POINT_TERM), "wrong type", extra, "a JSON object")
    if term(form, "timeout")[1] is not None:
        ctx.note(path, "modv:timeout has no place in our model; ignored")
    if len(ctx.errors) > errors or table is None or address is None:
        return None
    return _Form(
        path=path,
        table=table,
        address=address,
        unit=unit if unit is not None else href_unit,
        quantity=quantity if quantity is not None else href_quantity,
        xsd=xsd,
        function=function,
        writes=_writes(form.get("op"), function),
        zero_based=ctx.get_bool(form, term(form, "zeroBasedAddressing")[0], path),
        msb=ctx.get_bool(form, term(form, "mostSignificantByte")[0], path),
        msw=ctx.get_bool(form, term(form, "mostSignificantWord")[0], path),
        polling_ms=polling_ms,
        extra=extra if isinstance(extra, dict) else None,
    )


def _intterm(ctx: Ctx, form: dict[str, Any], name: str, path: str, low: int) -> int | None:
    key, _ = term(form, name)
    return ctx.get_int(form, key, path, low)


def _read_function(ctx: Ctx, form: dict[str, Any], path: str) -> int | None:
    key, value = term(form, "function")
    if value is None:
        return None
    if isinstance(value, str) and value in FUNCTIONS:
        return FUNCTIONS[value]
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 127:
        return value
    ctx.error(child(path, key), "unknown Modbus function", value, f"one of {list(FUNCTIONS)}")
    return None


def _writes(op: Any, function: int | None) -> bool:
    """True when a form's function is the write function (by its op, else by its code)."""
    ops = {op} if isinstance(op, str) else set(op) if isinstance(op, list) else set()
    reads = bool(ops & {"readproperty", "observeproperty"})
    if "writeproperty" in ops and not reads:
        return True
    if reads and "writeproperty" not in ops:
        return False
    return function in WRITE_CODES


def _from_href(
    ctx: Ctx, href: Any, base: Any, path: str
) -> tuple[int | None, int | None, int | None]:
    """Unit, address and quantity from ``/<unit>/<address>?quantity=<n>`` (base supplies the
    unit when the href has only the address)."""
    if not isinstance(href, str):
        return None, None, None
    parts = urlsplit(href)
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) == 1 and isinstance(base, str):
        segments = [s for s in urlsplit(base).path.split("/") if s][-1:] + segments
    numbers = [int(s) if s.lstrip("-").isdigit() else None for s in segments[-2:]]
    address = numbers[-1] if numbers else None
    unit = numbers[0] if len(numbers) == 2 else None
    if address is not None and address < 0:
        ctx.error(child(path, "href"), "negative Modbus address", href)
        address = None
    query = parse_qs(parts.query).get("quantity", [])
    quantity = int(query[0]) if query and query[0].isdigit() and int(query[0]) > 0 else None
    if query and quantity is None:
        ctx.error(child(path, "href"), "quantity must be a positive integer", href)
    return unit, address, quantity


def _binding(
    ctx: Ctx, top: dict[str, Any], parsed: list[tuple[ModbusAffordance, list[_Form]]], exact: bool
) -> ModbusBinding:
    if exact:
        settings = {
            k: v
            for k, v in top.items()
            if k not in ("points", "services", "pointOrder", "serviceOrder")
        }
        return from_plain(ctx, ModbusBinding, settings, TOP_PATH) or ModbusBinding()
    forms = [f for _, fs in parsed for f in fs]
    unit = next((f.unit for f in forms if f.unit is not None), 1)
    zero = forms[0].zero_based is not False if forms else True  # as the first form has it
    return ModbusBinding(unit_id=unit, zero_based=zero)


def _guess_type(ctx: Ctx, form: _Form, wot_type: Any) -> ModbusType:
    if form.xsd is not None:
        return xsd_type(form.xsd, form.quantity) or ModbusType.UINT16
    if form.table.is_bit_table:
        return ModbusType.BIT
    if wot_type == "string":
        kind = ModbusType.STRING
    elif wot_type == "boolean":
        kind = ModbusType.UINT16
    else:
        sizes = BY_SIZE["number" if wot_type == "number" else "integer"]
        kind = sizes.get(form.quantity or 1, ModbusType.UINT16)
    ctx.note(form.path, f"no modv:type; assumed {kind.value} (quantity {form.quantity or 1})")
    return kind


def _points(
    ctx: Ctx, binding: ModbusBinding, aff: ModbusAffordance, forms: list[_Form], exact: bool
) -> list[ModbusPoint]:
    groups: dict[tuple[ModbusTable, int, int | None], list[_Form]] = {}
    for form in forms:
        groups.setdefault((form.table, form.address, form.unit), []).append(form)
    points = []
    for group in groups.values():
        first = group[0]
        read = next((f.function for f in group if f.function is not None and not f.writes), None)
        write = next((f.function for f in group if f.function is not None and f.writes), None)
        fields: dict[str, Any] = {
            "property": aff.id,
            "table": first.table.value,
            "address": _address(ctx, binding, first, exact),
            "type": _guess_type(ctx, first, aff.wot_type).value,
            "read_function": read,
            "write_function": write,
        }
        if exact:
            fields.update(_checked_extra(ctx, first, FORM_FIELDS))
        else:
            fields.update(_foreign_extras(binding, first, ModbusType(fields["type"])))
        point = from_plain(ctx, ModbusPoint, fields, child(first.path, POINT_TERM))
        if point is not None:
            points.append(point)
    return points


def _address(ctx: Ctx, binding: ModbusBinding, form: _Form, exact: bool) -> int:
    address = form.address
    if form.zero_based is not None and form.zero_based != binding.zero_based:
        address += 1 if form.zero_based else -1  # into the binding's convention
    if address < 0:
        ctx.error(form.path, "address 0 is not a one-based address", form.address)
    if not exact and address > 9999 and str(address)[0] == _MODICON.get(form.table):
        ctx.note(form.path, f"address {address} looks like Modicon notation; used as given")
    return max(address, 0)


_MODICON = {
    ModbusTable.COIL: "0",
    ModbusTable.DISCRETE_INPUT: "1",
    ModbusTable.INPUT_REGISTER: "3",
    ModbusTable.HOLDING_REGISTER: "4",
}


def _checked_extra(ctx: Ctx, form: _Form, reserved: tuple[str, ...]) -> dict[str, Any]:
    """``tmx:point``/``tmx:write`` without the fields the ``modv:`` terms state."""
    extra = dict(form.extra or {})
    for key in sorted(set(extra) & set(reserved) - {"type"}):
        ctx.error(child(form.path, key), f"{key!r} is stated by the modv: terms, not here", extra)
        del extra[key]
    return extra


def _foreign_extras(binding: ModbusBinding, form: _Form, kind: ModbusType) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    sized = kind in (ModbusType.STRING, ModbusType.BYTES) or form.quantity != kind.register_count
    if form.quantity is not None and not form.table.is_bit_table and sized:
        extras["count"] = form.quantity
    if form.unit is not None and form.unit != binding.unit_id:
        extras["unit_id"] = form.unit
    if form.msb is not None:
        extras["byte_order"] = "big" if form.msb else "little"
    if form.msw is not None:
        extras["word_order"] = "big" if form.msw else "little"
    if form.polling_ms is not None:
        extras["report"] = to_plain(ReportPolicy(poll_interval_s=form.polling_ms / 1000))
    return extras


def _write(
    ctx: Ctx, binding: ModbusBinding, service: str, form: _Form, exact: bool
) -> ModbusServiceWrite | None:
    kind = xsd_type(form.xsd, form.quantity) if form.xsd else None
    if kind is None:
        kind = ModbusType.BIT if form.table.is_bit_table else ModbusType.UINT16
    fields: dict[str, Any] = {
        "service": service,
        "table": form.table.value,
        "address": _address(ctx, binding, form, exact),
        "type": kind.value,
        "write_function": form.function,
    }
    if exact:
        fields.update(_checked_extra(ctx, form, WRITE_FIELDS))
    else:
        ctx.note(form.path, "Modbus action: the value to write is not stated; set it in the model")
    return from_plain(ctx, ModbusServiceWrite, fields, child(form.path, WRITE_TERM))


def _orphans(ctx: Ctx, top: dict[str, Any], key: str, cls: type[Any]) -> list[Any]:
    raw = top.get(key, [])
    path = child(TOP_PATH, key)
    if not isinstance(raw, list):
        ctx.error(path, "wrong type", raw, "a JSON array")
        return []
    items = (from_plain(ctx, cls, item, child(path, i)) for i, item in enumerate(raw))
    return [item for item in items if item is not None]


def _reorder(ctx: Ctx, top: dict[str, Any], key: str, items: list[Any]) -> list[Any]:
    order = top.get(key)
    if order is None:
        return items
    if not isinstance(order, list) or sorted(order) != list(range(len(items))):
        path = child(TOP_PATH, key)
        ctx.error(path, f"not a permutation of the {len(items)} entries", order)
        return items
    return [items[i] for i in order]
