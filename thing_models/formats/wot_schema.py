"""Data schemas both ways: our :class:`DataSchema`/:class:`Field` and WoT (JSON-Schema-like) terms.

The WoT ``type`` alone does not tell int32 from int64, float from double or a timestamp from an
integer, so :func:`infer_type` defines what a plain WoT schema means, and the export adds
``tmx:dataType`` only where that inference would read back a different type.
"""

from __future__ import annotations

from typing import Any

from thing_models.formats.wot_terms import TMX, Ctx, child, sanitize_identifier
from thing_models.model import IDENTIFIER_RE, INT_RANGES, DataSchema, DataType, EnumValue, Field

__all__ = [
    "SCHEMA_TERMS",
    "fields_from_wot",
    "fields_to_wot",
    "infer_type",
    "schema_from_wot",
    "schema_terms",
]

DATA_TYPE = f"{TMX}:dataType"
STEP = f"{TMX}:step"
UNIT_NAME = f"{TMX}:unitName"
BOOL_LABELS = f"{TMX}:boolLabels"
MAX_LENGTH = f"{TMX}:maxLength"
MAX_ITEMS = f"{TMX}:maxItems"

#: Terms :func:`schema_from_wot` always consumes (``format`` and ``oneOf`` only in some forms).
SCHEMA_TERMS = frozenset(
    {"type", "minimum", "maximum", "multipleOf", "unit", "enum", "maxLength", "properties"}
    | {"required", "items", "maxItems", DATA_TYPE, STEP, UNIT_NAME, BOOL_LABELS, MAX_LENGTH}
    | {MAX_ITEMS}
)
_WOT_TYPES = ("boolean", "integer", "number", "string", "object", "array", "null")
_INT32 = INT_RANGES[DataType.INT32]


# --------------------------------------------------------------------------- inference


def infer_type(terms: dict[str, Any]) -> DataType:
    """The type a WoT schema without ``tmx:dataType`` stands for."""
    wot_type = terms.get("type")
    if "enum" in terms or _const_options(terms.get("oneOf")) is not None:
        return DataType.ENUM
    if wot_type == "boolean":
        return DataType.BOOL
    if wot_type == "integer":
        low, high = terms.get("minimum"), terms.get("maximum")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
        fits = numbers and _INT32[0] <= low <= high <= _INT32[1]  # type: ignore[operator]
        return DataType.INT32 if fits else DataType.INT64
    if wot_type == "number":
        return DataType.DOUBLE
    if wot_type == "object" or (wot_type is None and "properties" in terms):
        return DataType.STRUCT
    if wot_type == "array" or (wot_type is None and "items" in terms):
        return DataType.ARRAY
    if wot_type == "string" and terms.get("format") == "date-time":
        return DataType.TIMESTAMP
    return DataType.TEXT


def _const_options(one_of: Any) -> list[dict[str, Any]] | None:
    """``oneOf`` when it is a list of ``{"const": ..., "title"?, "description"?}`` (an enum)."""
    if not isinstance(one_of, list) or not one_of:
        return None
    allowed = {"const", "title", "description"}
    if all(isinstance(o, dict) and "const" in o and set(o) <= allowed for o in one_of):
        return one_of
    return None


# --------------------------------------------------------------------------- export


def schema_terms(schema: DataSchema) -> dict[str, Any]:
    """The WoT terms of ``schema`` (to be merged into an affordance or a sub-schema)."""
    out: dict[str, Any] = {}
    kind = schema.type
    if kind is DataType.ENUM:
        values = [m.value for m in schema.enum]
        if values and all(isinstance(v, int) for v in values):
            out["type"] = "integer"
        elif not values or all(isinstance(v, str) for v in values):
            out["type"] = "string"
    else:
        out["type"] = _EXPORT_TYPE[kind]
    _put_number(out, "minimum", schema.minimum)
    _put_number(out, "maximum", schema.maximum)
    if schema.step is not None:
        out["multipleOf" if schema.step > 0 else STEP] = schema.step
    if schema.unit is not None:
        out["unit"] = schema.unit
    if schema.unit_name is not None:
        out[UNIT_NAME] = schema.unit_name
    if schema.max_length is not None:
        out["maxLength" if schema.max_length >= 0 else MAX_LENGTH] = schema.max_length
    if schema.enum:
        out["enum"] = [m.value for m in schema.enum]
        if any(m.label != str(m.value) or m.description for m in schema.enum):
            out["oneOf"] = [_enum_option(m) for m in schema.enum]
    if schema.bool_labels is not None:
        out[BOOL_LABELS] = list(schema.bool_labels)
    if schema.fields:
        members = fields_to_wot(schema.fields)
        del members["type"]
        out.update(members)
    if schema.items is not None:
        out["items"] = schema_terms(schema.items)
    if schema.max_items is not None:
        out["maxItems" if schema.max_items >= 0 else MAX_ITEMS] = schema.max_items
    if infer_type(out) is not kind:
        out[DATA_TYPE] = kind.value
    return out


_EXPORT_TYPE = {
    DataType.BOOL: "boolean",
    DataType.INT32: "integer",
    DataType.INT64: "integer",
    DataType.TIMESTAMP: "integer",
    DataType.FLOAT: "number",
    DataType.DOUBLE: "number",
    DataType.TEXT: "string",
    DataType.STRUCT: "object",
    DataType.ARRAY: "array",
}


def _put_number(out: dict[str, Any], key: str, value: int | float | None) -> None:
    if value is not None:
        out[key] = value


def _enum_option(member: EnumValue) -> dict[str, Any]:
    option: dict[str, Any] = {"const": member.value, "title": member.label}
    if member.description:
        option["description"] = member.description
    return option


def fields_to_wot(fields: tuple[Field, ...]) -> dict[str, Any]:
    """An object schema (``type``, ``properties``, ``required``) holding ``fields``."""
    out: dict[str, Any] = {"type": "object"}
    if fields:
        out["properties"] = {f.id: _field_terms(f) for f in fields}
    required = [f.id for f in fields if f.required]
    if required:
        out["required"] = required
    return out


def _field_terms(item: Field) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if item.title:
        out["title"] = item.title
    if item.description:
        out["description"] = item.description
    out.update(schema_terms(item.schema))
    return out


# --------------------------------------------------------------------------- import


def schema_from_wot(
    ctx: Ctx, terms: dict[str, Any], path: str, *, nested: bool = True
) -> tuple[DataSchema, set[str]]:
    """Read a data schema; returns it and the terms consumed. With ``nested``, terms nothing
    reads are noted as ignored (an affordance keeps them in its extensions instead)."""
    used = set(SCHEMA_TERMS & terms.keys())
    kind = _read_type(ctx, terms, path)
    enum, enum_terms = _read_enum(ctx, terms, path)
    used |= enum_terms
    if kind is DataType.TIMESTAMP and terms.get("format") == "date-time":
        used.add("format")
        ctx.note(path, "date-time text read as a timestamp (milliseconds since the epoch)")
    fields: tuple[Field, ...] = ()
    if "properties" in terms:
        fields = fields_from_wot(ctx, terms, path)
    items = None
    raw_items = terms.get("items")
    if isinstance(raw_items, dict):
        items, _ = schema_from_wot(ctx, raw_items, child(path, "items"))
    elif raw_items is not None:
        ctx.error(child(path, "items"), "wrong type", raw_items, "one data schema (an object)")
    schema = DataSchema(
        type=kind,
        minimum=ctx.get_number(terms, "minimum", path),
        maximum=ctx.get_number(terms, "maximum", path),
        step=_read_step(ctx, terms, path),
        unit=ctx.get_str(terms, "unit", path),
        unit_name=ctx.get_str(terms, UNIT_NAME, path),
        max_length=_first(ctx.get_int(terms, "maxLength", path, 0), terms, MAX_LENGTH, ctx, path),
        enum=enum,
        bool_labels=_read_bool_labels(ctx, terms, path),
        fields=fields,
        items=items,
        max_items=_first(ctx.get_int(terms, "maxItems", path, 0), terms, MAX_ITEMS, ctx, path),
    )
    if nested:
        ignored = sorted(set(terms) - used)
        if ignored:
            ctx.note(path, f"terms {', '.join(ignored)} have no place in our model; ignored")
    return schema, used


def _first(value: int | None, terms: dict[str, Any], key: str, ctx: Ctx, path: str) -> int | None:
    return value if value is not None else ctx.get_int(terms, key, path)


def _read_type(ctx: Ctx, terms: dict[str, Any], path: str) -> DataType:
    declared = terms.get(DATA_TYPE)
    if declared is not None:
        try:
            return DataType(declared)
        except ValueError:
            choices = ", ".join(t.value for t in DataType)
            ctx.error(child(path, DATA_TYPE), "unknown data type", declared, f"one of {choices}")
            return DataType.TEXT
    wot_type = terms.get("type")
    placeholder = ctx.tm and isinstance(wot_type, str) and "{{" in wot_type
    if wot_type is not None and wot_type not in _WOT_TYPES and not placeholder:
        ctx.error(child(path, "type"), "unknown type", wot_type, f"one of {_WOT_TYPES}")
        return DataType.TEXT
    kind = infer_type(terms)
    if wot_type == "null":
        ctx.note(child(path, "type"), "type null has no equivalent; read as text")
    elif wot_type is None and kind is DataType.TEXT:
        ctx.note(path, "no type given; read as text")
    return kind


def _read_step(ctx: Ctx, terms: dict[str, Any], path: str) -> int | float | None:
    step = ctx.get_number(terms, "multipleOf", path)
    if step is not None and step <= 0:
        ctx.error(child(path, "multipleOf"), "must be greater than 0", step)
        return None
    return step if step is not None else ctx.get_number(terms, STEP, path)


def _read_bool_labels(ctx: Ctx, terms: dict[str, Any], path: str) -> tuple[str, str] | None:
    labels = terms.get(BOOL_LABELS)
    if labels is None:
        return None
    if isinstance(labels, list) and len(labels) == 2 and all(isinstance(x, str) for x in labels):
        return (labels[0], labels[1])
    ctx.error(child(path, BOOL_LABELS), "wrong type", labels, "[false label, true label]")
    return None


def _read_enum(
    ctx: Ctx, terms: dict[str, Any], path: str
) -> tuple[tuple[EnumValue, ...], set[str]]:
    options = _const_options(terms.get("oneOf"))
    raw = terms.get("enum")
    if raw is None and options is None:
        return (), set()
    used = {"oneOf"} if options is not None else set()
    if raw is None:
        raw = [o["const"] for o in options or ()]
        where = child(path, "oneOf")
    else:
        used.add("enum")
        where = child(path, "enum")
        if not isinstance(raw, list):
            ctx.error(where, "wrong type", raw, "a JSON array of integers or strings")
            return (), used
    labels = {_key(o["const"]): o for o in options or ()}
    members: list[EnumValue] = []
    seen: set[tuple[type, Any]] = set()
    for index, value in enumerate(raw):
        if isinstance(value, bool) or not isinstance(value, int | str):
            ctx.error(child(where, index), "enum values must be integers or strings", value)
            continue
        if _key(value) in seen:
            ctx.error(child(where, index), "duplicate enum value", value)
            continue
        seen.add(_key(value))
        option = labels.get(_key(value), {})
        label, text = option.get("title", str(value)), option.get("description", "")
        if not isinstance(label, str) or not isinstance(text, str):
            ctx.error(child(path, "oneOf"), "enum titles and descriptions must be strings", option)
            continue
        members.append(EnumValue(value, label, text))
    return tuple(members), used


def _key(value: Any) -> tuple[type, Any]:
    return (type(value), value)


def fields_from_wot(ctx: Ctx, terms: dict[str, Any], path: str) -> tuple[Field, ...]:
    """The fields of an object schema (``properties`` and ``required``)."""
    props = ctx.get_obj(terms, "properties", path)
    required = ctx.get_list(terms, "required", path) or []
    if not all(isinstance(r, str) for r in required):
        ctx.error(child(path, "required"), "wrong type", required, "a list of property names")
        required = []
    fields: list[Field] = []
    seen: set[str] = set()
    for key, value in (props or {}).items():
        where = child(child(path, "properties"), key)
        if not isinstance(value, dict):
            ctx.error(where, "wrong type", value, "a data schema (a JSON object)")
            continue
        ident = key
        if not IDENTIFIER_RE.match(key):
            ident = sanitize_identifier(key)
            ctx.note(where, f"name {key!r} is not an identifier; renamed {ident!r}")
        if ident in seen:
            ctx.error(where, f"duplicate field {ident!r}", key)
            continue
        seen.add(ident)
        inner = {k: v for k, v in value.items() if k not in ("title", "description")}
        schema, _ = schema_from_wot(ctx, inner, where)
        title = ctx.get_str(value, "title", where) or ""
        text = ctx.get_str(value, "description", where) or ""
        fields.append(Field(ident, schema, title, text, required=key in required))
    return tuple(fields)
