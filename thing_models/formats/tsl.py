"""Alibaba IoT TSL (Thing Specification Language) JSON to and from the canonical model.

TSL quirks handled here: numeric specs are strings (``"min": "0"``); bool and enum specs are
value -> label maps; struct specs is a list of members while every other type uses an object;
``int`` is 32-bit; ``date`` is our ``timestamp``. TSL synthesizes the event ``post`` and the
services ``set`` and ``get`` from the properties: they are skipped on import and generated on
export. What the model has and TSL has not (bindings, composition, int64, ...) is named in
:attr:`Exported.losses`; TSL keys with no place in the model (schema URL, profile, ``required``
of events and services, unknown keys) are kept under the ``"tsl"`` key of ``extensions`` so
that an export restores them.

TSL names a product only by ``profile.productKey``: an import names the model
``aliyun.tsl/<productkey>`` at version 1.0.0 unless told otherwise, and an export reports a
name or version it cannot rebuild that way. A TSL ``name`` equal to the identifier reads as
no title, and an empty title is written as the identifier (TSL requires a name).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from thing_models.errors import Diagnostic, ModelLoadError, SourceLocation
from thing_models.formats import Exported, Imported
from thing_models.model import (
    IDENTIFIER_RE,
    INT_RANGES,
    MODEL_NAME_RE,
    Access,
    CallType,
    DataSchema,
    DataType,
    EnumValue,
    Event,
    EventLevel,
    Field,
    Property,
    Reporting,
    SemVer,
    Service,
    ThingModel,
)

__all__ = [
    "EXTENSION_KEY",
    "MAX_DEPTH",
    "MAX_KEPT_DEPTH",
    "SCHEMA_URLS",
    "is_tsl",
    "model_from_tsl",
    "model_to_tsl",
]

#: The two published TSL schema URLs; an export without a recorded one uses the first.
SCHEMA_URLS = (
    "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
    "https://iot-tsl.oss-cn-shanghai.aliyuncs.com/schema.json",
)
#: The key, in model, property, event and service ``extensions``, of what TSL kept for itself.
EXTENSION_KEY = "tsl"
#: Deepest struct/array nesting accepted on import.
MAX_DEPTH = 16
#: Deepest nesting of a JSON value kept verbatim in ``extensions`` (unknown keys, profile).
MAX_KEPT_DEPTH = 32
#: Diagnostics kept before the rest are only counted.
MAX_DIAGNOSTICS = 200

_NAMESPACE = "aliyun.tsl"
_DEFAULT_VERSION = SemVer(1, 0, 0)
_INT32_MIN, _INT32_MAX = INT_RANGES[DataType.INT32]
_INT_TEXT = re.compile(r"^[+-]?\d{1,20}$")
_FLOAT_TEXT = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,4})?$")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_TSL_TYPES: Mapping[str, DataType] = {
    "int": DataType.INT32,
    "float": DataType.FLOAT,
    "double": DataType.DOUBLE,
    "text": DataType.TEXT,
    "enum": DataType.ENUM,
    "bool": DataType.BOOL,
    "date": DataType.TIMESTAMP,
    "struct": DataType.STRUCT,
    "array": DataType.ARRAY,
}
_TYPE_NAMES: Mapping[DataType, str] = {
    **{ours: tsl for tsl, ours in _TSL_TYPES.items()},
    DataType.INT64: "int",
}
_ARRAY_ITEM_TYPES = frozenset({"int", "float", "double", "text", "struct"})
_NUMERIC_SPECS = ("min", "max", "step", "unit", "unitName")

_TOP_KEYS = frozenset({"schema", "profile", "properties", "events", "services"})
_PROPERTY_KEYS = frozenset({"identifier", "name", "desc", "accessMode", "required", "dataType"})
_EVENT_KEYS = frozenset({"identifier", "name", "desc", "type", "outputData"})
_SERVICE_KEYS = frozenset({"identifier", "name", "desc", "callType", "inputData", "outputData"})
_FIELD_KEYS = frozenset({"identifier", "name", "desc", "dataType"})
_BUILTIN_EVENTS = frozenset({"post"})
_BUILTIN_SERVICES = frozenset({"set", "get"})

T = TypeVar("T")


# =========================================================================== detection


def is_tsl(doc: Any) -> bool:
    """True when ``doc`` (parsed JSON) looks like an Alibaba TSL document."""
    if not isinstance(doc, dict):
        return False
    schema = doc.get("schema")
    if isinstance(schema, str) and (schema in SCHEMA_URLS or "tsl" in schema.lower()):
        return True
    markers = {
        "properties": ("dataType",),
        "events": ("outputData", "type"),
        "services": ("inputData", "callType"),
    }
    for key, wanted in markers.items():
        items = doc.get(key)
        if isinstance(items, list) and any(_has_marks(item, wanted) for item in items):
            return True
    return False


def _has_marks(item: Any, wanted: tuple[str, ...]) -> bool:
    return isinstance(item, dict) and "identifier" in item and any(k in item for k in wanted)


# =========================================================================== import


class _Reader:
    """Collects diagnostics and notes while one document is read."""

    def __init__(self, source: str) -> None:
        self.location = SourceLocation(source)
        self.diagnostics: list[Diagnostic] = []
        self.notes: list[str] = []
        self.dropped = 0

    def error(self, path: str, message: str, value: Any = None, expected: str = "") -> None:
        if len(self.diagnostics) >= MAX_DIAGNOSTICS:
            self.dropped += 1
            return
        self.diagnostics.append(Diagnostic(self.location, message, path, value, expected))

    def failure(self) -> ModelLoadError:
        diagnostics = list(self.diagnostics)
        if self.dropped:
            message = f"{self.dropped} more problems not listed"
            diagnostics.append(Diagnostic(self.location, message))
        return ModelLoadError(diagnostics)

    def obj(self, value: Any, path: str, what: str = "an object") -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.error(path, f"expected {what}", _kind(value), what)
        return None

    def array(self, value: Any, path: str) -> list[Any]:
        if isinstance(value, list):
            return value
        self.error(path, "expected a list", _kind(value), "a JSON array")
        return []

    def text(self, obj: Mapping[str, Any], key: str, path: str) -> str:
        value = obj.get(key, "")
        if isinstance(value, str):
            return value
        self.error(_join(path, key), "expected a string", value, "a string")
        return ""

    def flag(self, obj: Mapping[str, Any], key: str, path: str) -> bool:
        value = obj.get(key, False)
        if isinstance(value, bool):
            return value
        self.error(_join(path, key), "expected true or false", value, "a boolean")
        return False

    def copy(self, value: Any, path: str, depth: int = 0) -> Any:
        """A copy of a JSON value to keep in ``extensions``; refuses absurd nesting."""
        if depth > MAX_KEPT_DEPTH:
            self.error(path, f"value nested deeper than {MAX_KEPT_DEPTH} levels", "...")
            return None
        if isinstance(value, dict):
            return {k: self.copy(v, _join(path, k), depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.copy(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        return value

    def ignore_unknown(self, obj: Mapping[str, Any], known: frozenset[str], path: str) -> None:
        for key in obj:
            if key not in known:
                self.notes.append(f"{_join(path, key)}: unknown key ignored")


def _kind(value: Any) -> Any:
    """The value itself when small and scalar, else its JSON kind (for diagnostics)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return "an object"
    return "a list" if isinstance(value, list) else type(value).__name__


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = str(key)
    if not _PLAIN_KEY.match(key):
        return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
    return f"{path}.{key}" if path else key


def model_from_tsl(
    doc: Any, *, source: str = "<tsl>", name: str | None = None, version: str | None = None
) -> Imported:
    """Read a parsed TSL document into a :class:`ThingModel`.

    ``name`` defaults to ``aliyun.tsl/<productKey>`` and ``version`` to 1.0.0. Raises
    :class:`ModelLoadError` listing every problem, each with its JSON path.
    """
    r = _Reader(source)
    root = r.obj(doc, "", "a JSON object (a TSL document)")
    if root is None:
        raise r.failure()
    top_ext = _read_top(r, root)
    properties = _read_list(r, root, "properties", _read_property, frozenset())
    events = _read_list(r, root, "events", _read_event, _BUILTIN_EVENTS)
    services = _read_list(r, root, "services", _read_service, _BUILTIN_SERVICES)
    model_name = _model_name(r, name, top_ext.get("profile"))
    model_version = _model_version(r, version)
    if r.diagnostics:
        raise r.failure()
    _check_builtins(r, root, properties)
    model = ThingModel(
        name=model_name,
        version=model_version,
        properties=properties,
        events=events,
        services=services,
        extensions=_model_extensions(top_ext, model_name),
    )
    return Imported(model, tuple(r.notes))


def _read_top(r: _Reader, root: dict[str, Any]) -> dict[str, Any]:
    """Schema URL, profile and unknown top-level keys (``functionBlockId`` of modules...)."""
    ext: dict[str, Any] = {}
    schema = root.get("schema")
    if schema is not None:
        if not isinstance(schema, str):
            r.error("schema", "expected the TSL schema URL", _kind(schema), SCHEMA_URLS[0])
        else:
            if schema not in SCHEMA_URLS:
                r.notes.append(f"schema: unrecognised TSL schema URL {schema!r} kept")
            ext["schema"] = schema
    if "profile" in root:
        profile = r.obj(root["profile"], "profile")
        if profile is not None:
            if not isinstance(profile.get("productKey", ""), str):
                r.error("profile.productKey", "expected a string", profile["productKey"])
            ext["profile"] = r.copy(profile, "profile")
    for key, value in root.items():
        if key not in _TOP_KEYS:
            ext[key] = r.copy(value, _join("", key))
            r.notes.append(f"{_join('', key)}: kept in extensions[{EXTENSION_KEY!r}]")
    if "functionBlockId" in root:
        r.notes.append(f"module (functionBlockId {root['functionBlockId']!r}) read as a model")
    return ext


def _product_key_name(product_key: str) -> str:
    """``aliyun.tsl/<product key>``, lowercased and cut to what a model name allows."""
    slug = re.sub(r"[^a-z0-9-]+", "-", product_key.lower()).strip("-")
    if not slug:
        slug = "unnamed"
    elif not slug[0].isalpha():
        slug = f"p{slug}"
    return f"{_NAMESPACE}/{slug}"


def _model_name(r: _Reader, name: str | None, profile: Any) -> str:
    if name is not None:
        if not MODEL_NAME_RE.match(name):
            r.error("", "model name is not namespace/name", name, "e.g. com.acme.energy/meter-3p")
        return name
    product_key = profile.get("productKey") if isinstance(profile, dict) else None
    if not isinstance(product_key, str) or not product_key:
        r.notes.append(f"profile.productKey missing: model named {_NAMESPACE}/unnamed")
        product_key = ""
    return _product_key_name(product_key)


def _model_version(r: _Reader, version: str | None) -> SemVer:
    if version is None:
        return _DEFAULT_VERSION
    try:
        return SemVer.parse(version)
    except ValueError as exc:
        r.error("", str(exc), version, "MAJOR.MINOR.PATCH")
        return _DEFAULT_VERSION


def _model_extensions(top_ext: dict[str, Any], model_name: str) -> dict[str, Any]:
    """What TSL kept at the top, less what an export would generate anyway."""
    ext = dict(top_ext)
    if ext.get("schema") == SCHEMA_URLS[0]:
        del ext["schema"]
    if ext.get("profile") == _default_profile(model_name):
        del ext["profile"]
    return {EXTENSION_KEY: ext} if ext else {}


def _read_list(
    r: _Reader,
    root: dict[str, Any],
    key: str,
    reader: Callable[[_Reader, dict[str, Any], str], T | None],
    builtins: frozenset[str],
) -> tuple[T, ...]:
    """Read ``root[key]`` item by item, skipping built-ins and reporting duplicates."""
    result: list[T] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(r.array(root.get(key, []), key)):
        path = f"{key}[{index}]"
        obj = r.obj(raw, path)
        if obj is None or _text_in(obj.get("identifier"), builtins):
            continue
        _note_duplicate(r, obj.get("identifier"), path, seen)
        item = reader(r, obj, path)
        if item is not None:
            result.append(item)
    return tuple(result)


def _text_in(value: Any, choices: frozenset[str]) -> bool:
    return isinstance(value, str) and value in choices


def _note_duplicate(r: _Reader, ident: Any, path: str, seen: dict[str, str]) -> None:
    if not isinstance(ident, str):
        return
    if ident in seen:
        r.error(f"{path}.identifier", f"duplicate identifier (first at {seen[ident]})", ident)
    else:
        seen[ident] = path


def _identifier(r: _Reader, obj: Mapping[str, Any], path: str) -> str | None:
    ident = obj.get("identifier")
    if ident is None:
        r.error(f"{path}.identifier", "missing identifier", expected="an identifier")
        return None
    if not isinstance(ident, str) or not IDENTIFIER_RE.match(ident):
        expected = "letters, digits and _, not starting with a digit, at most 50"
        r.error(f"{path}.identifier", "invalid identifier", _kind(ident), expected)
        return None
    return ident


def _title(r: _Reader, obj: Mapping[str, Any], path: str, ident: str | None) -> str:
    """TSL's ``name``; a name equal to the identifier means no title of its own."""
    title = r.text(obj, "name", path)
    return "" if title == ident else title


def _choice(r: _Reader, obj: Mapping[str, Any], key: str, path: str, default: T) -> T:
    """``obj[key]`` as a member of ``default``'s StrEnum class."""
    raw = obj.get(key)
    if raw is None:
        return default
    enum_cls: Any = type(default)
    try:
        return enum_cls(raw)  # type: ignore[no-any-return]
    except ValueError:
        expected = " or ".join(repr(m.value) for m in enum_cls)
        r.error(_join(path, key), f"invalid {key}", _kind(raw), expected)
        return default


def _read_property(r: _Reader, obj: dict[str, Any], path: str) -> Property | None:
    ident = _identifier(r, obj, path)
    title = _title(r, obj, path, ident)
    description = r.text(obj, "desc", path)
    access = _choice(r, obj, "accessMode", path, Access.READ)
    required = r.flag(obj, "required", path)
    schema = _read_data_type(r, obj, path, 0)
    extra = {k: r.copy(v, _join(path, k)) for k, v in obj.items() if k not in _PROPERTY_KEYS}
    if ident is None or schema is None:
        return None
    ext = {EXTENSION_KEY: extra} if extra else {}
    return Property(ident, schema, title, description, access, required, ext)


def _read_event(r: _Reader, obj: dict[str, Any], path: str) -> Event | None:
    ident = _identifier(r, obj, path)
    title = _title(r, obj, path, ident)
    description = r.text(obj, "desc", path)
    level = _choice(r, obj, "type", path, EventLevel.INFO)
    outputs = _read_fields(r, obj.get("outputData", []), f"{path}.outputData", 0)
    ext = _affordance_extensions(r, obj, path, _EVENT_KEYS, f"thing.event.{ident}.post")
    if ident is None:
        return None
    return Event(ident, level, outputs, title, description, ext)


def _read_service(r: _Reader, obj: dict[str, Any], path: str) -> Service | None:
    ident = _identifier(r, obj, path)
    title = _title(r, obj, path, ident)
    description = r.text(obj, "desc", path)
    call_type = _choice(r, obj, "callType", path, CallType.ASYNC)
    inputs = _read_fields(r, obj.get("inputData", []), f"{path}.inputData", 0)
    outputs = _read_fields(r, obj.get("outputData", []), f"{path}.outputData", 0)
    ext = _affordance_extensions(r, obj, path, _SERVICE_KEYS, f"thing.service.{ident}")
    if ident is None:
        return None
    return Service(ident, call_type, inputs, outputs, title, description, ext)


def _affordance_extensions(
    r: _Reader, obj: Mapping[str, Any], path: str, known: frozenset[str], method: str
) -> dict[str, Any]:
    """``required`` (when true), a non-standard ``method`` and unknown keys, for the export."""
    extra: dict[str, Any] = {}
    if r.flag(obj, "required", path):
        extra["required"] = True
    if r.text(obj, "method", path) not in ("", method):
        extra["method"] = obj["method"]
        r.notes.append(f"{path}.method: {obj['method']!r} is not the usual {method!r}; kept")
    skip = known | {"required", "method"}
    extra.update({k: r.copy(v, _join(path, k)) for k, v in obj.items() if k not in skip})
    return {EXTENSION_KEY: extra} if extra else {}


def _read_fields(r: _Reader, raw: Any, path: str, depth: int) -> tuple[Field, ...]:
    """A list of TSL parameters or struct members."""
    result: list[Field] = []
    seen: dict[str, str] = {}
    for index, item in enumerate(r.array(raw, path)):
        item_path = f"{path}[{index}]"
        obj = r.obj(item, item_path, "a parameter object (identifier, name, dataType)")
        if obj is None:
            continue
        _note_duplicate(r, obj.get("identifier"), item_path, seen)
        ident = _identifier(r, obj, item_path)
        title = _title(r, obj, item_path, ident)
        description = r.text(obj, "desc", item_path)
        schema = _read_data_type(r, obj, item_path, depth)
        r.ignore_unknown(obj, _FIELD_KEYS, item_path)
        if ident is not None and schema is not None:
            result.append(Field(ident, schema, title, description))
    return tuple(result)


def _read_data_type(
    r: _Reader, owner: Mapping[str, Any], path: str, depth: int
) -> DataSchema | None:
    """``owner["dataType"]``: a type name and its specs."""
    if "dataType" not in owner:
        r.error(path, "missing dataType", expected="an object with type and specs")
        return None
    return _read_type(r, owner["dataType"], f"{path}.dataType", depth)


def _read_type(r: _Reader, raw: Any, path: str, depth: int) -> DataSchema | None:
    if depth >= MAX_DEPTH:
        r.error(
            path, f"struct/array nesting deeper than {MAX_DEPTH} levels", expected="less nesting"
        )
        return None
    obj = r.obj(raw, path, "a dataType object (type, specs)")
    if obj is None:
        return None
    type_name = obj.get("type")
    if not isinstance(type_name, str) or type_name not in _TSL_TYPES:
        r.error(f"{path}.type", "unknown data type", _kind(type_name), ", ".join(_TSL_TYPES))
        return None
    r.ignore_unknown(obj, frozenset({"type", "specs"}), path)
    specs_path = f"{path}.specs"
    if type_name == "struct":
        fields = _read_struct_specs(r, obj.get("specs"), specs_path, depth)
        return None if fields is None else DataSchema(DataType.STRUCT, fields=fields)
    specs = r.obj(obj.get("specs", {}), specs_path, _SPEC_SHAPES.get(type_name, "an object"))
    if specs is None:
        return None
    return _SPEC_READERS[type_name](r, specs, specs_path, depth)


def _read_struct_specs(r: _Reader, raw: Any, path: str, depth: int) -> tuple[Field, ...] | None:
    if not isinstance(raw, list):
        r.error(path, "struct specs must be a list of members", _kind(raw), "a list")
        return None
    return _read_fields(r, raw, path, depth + 1)


def _read_numeric(data_type: DataType) -> Callable[..., DataSchema | None]:
    def read(r: _Reader, specs: dict[str, Any], path: str, _depth: int) -> DataSchema | None:
        integer = data_type is DataType.INT32
        bounds = {k: _spec_number(r, specs, k, path, integer) for k in ("min", "max", "step")}
        unit = _spec_text(r, specs, "unit", path)
        unit_name = _spec_text(r, specs, "unitName", path)
        r.ignore_unknown(specs, frozenset(_NUMERIC_SPECS), path)
        low, high, step = bounds["min"], bounds["max"], bounds["step"]
        if low is not None and high is not None and low > high:
            r.error(f"{path}.min", f"min {low} is greater than max {high}", specs["min"])
        if step is not None and step < 0:
            r.error(f"{path}.step", "step is negative", specs["step"], "a positive number")
        return DataSchema(data_type, low, high, step, unit, unit_name)

    return read


def _spec_number(
    r: _Reader, specs: Mapping[str, Any], key: str, path: str, integer: bool
) -> int | float | None:
    raw = specs.get(key)
    if raw is None:
        return None
    value = _parse_number(raw, integer)
    kind = "an integer" if integer else "a number"
    if value is None:
        r.error(
            _join(path, key), f"{key} is not {kind}", _kind(raw), f'{kind} as a string, e.g. "10"'
        )
    elif integer and not _INT32_MIN <= value <= _INT32_MAX:
        r.error(_join(path, key), f"{key} is outside the 32-bit int range", raw, "a 32-bit int")
        return None
    return value


def _parse_number(raw: Any, integer: bool) -> int | float | None:
    """A finite number from a JSON string (TSL's way) or number; None when it is not one."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        text = raw.strip()
        if integer:
            return int(text) if _INT_TEXT.match(text) else None
        return _finite(float(text)) if _FLOAT_TEXT.match(text) else None
    if isinstance(raw, int):
        return raw if integer else float(raw)
    if isinstance(raw, float) and math.isfinite(raw):
        return (int(raw) if raw.is_integer() else None) if integer else raw
    return None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _spec_text(r: _Reader, specs: Mapping[str, Any], key: str, path: str) -> str | None:
    raw = specs.get(key)
    if raw is None or isinstance(raw, str):
        return raw
    r.error(_join(path, key), f"{key} must be a string", _kind(raw), "a string")
    return None


def _spec_count(r: _Reader, specs: Mapping[str, Any], key: str, path: str) -> int | None:
    raw = specs.get(key)
    if raw is None:
        return None
    value = _parse_number(raw, integer=True)
    if value is None or not 0 <= value <= _INT32_MAX:
        r.error(
            _join(path, key),
            f"{key} is not a count",
            _kind(raw),
            'a non-negative integer, e.g. "32"',
        )
        return None
    return int(value)


def _read_text(r: _Reader, specs: dict[str, Any], path: str, _depth: int) -> DataSchema | None:
    r.ignore_unknown(specs, frozenset({"length"}), path)
    return DataSchema(DataType.TEXT, max_length=_spec_count(r, specs, "length", path))


def _read_date(r: _Reader, specs: dict[str, Any], path: str, _depth: int) -> DataSchema | None:
    r.ignore_unknown(specs, frozenset(), path)
    return DataSchema(DataType.TIMESTAMP)


def _read_bool(r: _Reader, specs: dict[str, Any], path: str, _depth: int) -> DataSchema | None:
    labels = _labels(r, specs, path)
    if not labels:
        return DataSchema(DataType.BOOL)
    if set(labels) != {0, 1}:
        r.error(path, "bool specs must label both 0 and 1", sorted(labels), '{"0": ..., "1": ...}')
        return None
    return DataSchema(DataType.BOOL, bool_labels=(labels[0], labels[1]))


def _read_enum(r: _Reader, specs: dict[str, Any], path: str, _depth: int) -> DataSchema | None:
    labels = _labels(r, specs, path)
    members = tuple(EnumValue(value, label) for value, label in labels.items())
    return DataSchema(DataType.ENUM, enum=members)


def _labels(r: _Reader, specs: Mapping[str, Any], path: str) -> dict[int, str]:
    """A value -> label map whose keys are integers written as strings."""
    labels: dict[int, str] = {}
    for key, label in specs.items():
        value = _parse_number(key, integer=True)
        if value is None:
            r.error(_join(path, key), "value is not an integer", key, 'an integer key, e.g. "1"')
        elif not isinstance(label, str):
            r.error(_join(path, key), "label must be a string", _kind(label), "a string")
        elif int(value) in labels:
            r.error(_join(path, key), "value listed twice", key)
        else:
            labels[int(value)] = label
    return labels


def _read_array(r: _Reader, specs: dict[str, Any], path: str, depth: int) -> DataSchema | None:
    r.ignore_unknown(specs, frozenset({"size", "item"}), path)
    size = _spec_count(r, specs, "size", path)
    if "item" not in specs:
        r.error(path, "array specs need an item type", expected='"item": {"type": ...}')
        return None
    item = specs["item"]
    item_type = item.get("type") if isinstance(item, dict) else None
    if (
        isinstance(item_type, str)
        and item_type in _TSL_TYPES
        and item_type not in _ARRAY_ITEM_TYPES
    ):
        r.notes.append(f"{path}.item: array of {item_type} is not standard TSL (read anyway)")
    items = _read_type(r, item, f"{path}.item", depth + 1)
    return None if items is None else DataSchema(DataType.ARRAY, items=items, max_items=size)


_SpecReader = Callable[[_Reader, dict[str, Any], str, int], DataSchema | None]
_SPEC_READERS: Mapping[str, _SpecReader] = {
    "int": _read_numeric(DataType.INT32),
    "float": _read_numeric(DataType.FLOAT),
    "double": _read_numeric(DataType.DOUBLE),
    "text": _read_text,
    "enum": _read_enum,
    "bool": _read_bool,
    "date": _read_date,
    "array": _read_array,
}
_SPEC_SHAPES = {
    "bool": 'an object {"0": label, "1": label}',
    "enum": "an object mapping integer values to labels",
    "array": 'an object {"size": ..., "item": {...}}',
}


def _check_builtins(r: _Reader, root: Mapping[str, Any], properties: tuple[Property, ...]) -> None:
    """Note built-in event/services whose contents differ from what an export regenerates."""
    every = [p.id for p in properties]
    writable = [p.id for p in properties if p.access is Access.READ_WRITE]
    expected = {
        ("events", "post", "outputData"): every,
        ("services", "set", "inputData"): writable,
        ("services", "get", "inputData"): every,
        ("services", "get", "outputData"): every,
    }
    for (key, ident, part), wanted in expected.items():
        items = root.get(key, [])
        for index, obj in enumerate(items if isinstance(items, list) else []):
            if not isinstance(obj, dict) or obj.get("identifier") != ident:
                continue
            if _param_ids(obj.get(part)) != wanted:
                where = f"{key}[{index}].{part}"
                r.notes.append(
                    f"{where}: built-in {ident!r} differs from the properties; "
                    "regenerated from them on export"
                )


def _param_ids(raw: Any) -> list[Any]:
    if not isinstance(raw, list):
        return [raw]
    return [item.get("identifier") if isinstance(item, dict) else item for item in raw]


# =========================================================================== export


class _Losses:
    """What an export could not express, by name."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(text)


def model_to_tsl(model: ThingModel) -> Exported:
    """Write ``model`` as a TSL document; :attr:`Exported.losses` names what TSL cannot hold."""
    losses = _Losses()
    top = _own_extensions(losses, model.extensions, "model", _TOP_KEYS - {"schema", "profile"})
    profile = top.pop("profile", None) or _default_profile(model.name)
    _identity_losses(losses, model, profile)
    _composition_losses(losses, model)
    properties = [_write_property(losses, p) for p in model.properties]
    doc: dict[str, Any] = {
        "schema": top.pop("schema", SCHEMA_URLS[0]),
        "profile": profile,
        **top,
        "properties": properties,
        "events": [_post_event(properties), *_write_events(losses, model.events)],
        "services": [*_builtin_services(model, properties), *_write_services(losses, model)],
    }
    return Exported(doc, tuple(losses.items))


def _default_profile(model_name: str) -> dict[str, Any]:
    return {"productKey": model_name.rpartition("/")[2]}


def _identity_losses(losses: _Losses, model: ThingModel, profile: Any) -> None:
    product_key = profile.get("productKey") if isinstance(profile, Mapping) else None
    if not isinstance(product_key, str) or _product_key_name(product_key) != model.name:
        losses.add(f"name {model.name!r} (TSL keeps only profile.productKey {product_key!r})")
    if model.version != _DEFAULT_VERSION:
        losses.add(f"version {model.version}")
    for attribute in ("title", "description", "vendor"):
        if getattr(model, attribute):
            losses.add(attribute)


def _composition_losses(losses: _Losses, model: ThingModel) -> None:
    if model.extends is not None:
        losses.add(f"extends ({model.extends})")
    if model.components:
        losses.add(f"components ({', '.join(c.instance for c in model.components)})")
    protocols = list(model.bindings.protocols)
    if model.bindings.reporting != Reporting():
        protocols.append("reporting")
    if protocols:
        losses.add(f"bindings ({', '.join(protocols)})")


def _own_extensions(
    losses: _Losses, extensions: Mapping[str, Any], where: str, reserved: frozenset[str]
) -> dict[str, Any]:
    """The TSL keys kept in ``extensions``; other extensions and clashing keys are losses."""
    others = sorted(k for k in extensions if k != EXTENSION_KEY)
    kept = extensions.get(EXTENSION_KEY, {})
    if not isinstance(kept, Mapping):
        others.append(EXTENSION_KEY)
        kept = {}
    clashing = sorted(k for k in kept if k in reserved)
    if others:
        losses.add(f"{where}: extensions ({', '.join(others)})")
    if clashing:
        losses.add(f"{where}: extensions[{EXTENSION_KEY!r}] keys ({', '.join(clashing)})")
    return {k: copy.deepcopy(v) for k, v in kept.items() if k not in reserved}


def _name(title: str, ident: str) -> str:
    return title or ident


def _write_property(losses: _Losses, prop: Property) -> dict[str, Any]:
    where = f"property {prop.id!r}"
    out: dict[str, Any] = {
        "identifier": prop.id,
        "name": _name(prop.title, prop.id),
        "accessMode": prop.access.value,
        "required": prop.required,
    }
    if prop.description:
        out["desc"] = prop.description
    out["dataType"] = _write_schema(losses, prop.schema, where)
    out.update(_own_extensions(losses, prop.extensions, where, _PROPERTY_KEYS))
    return out


def _as_param(prop: dict[str, Any]) -> dict[str, Any]:
    """A written property as TSL lists it inside the built-in event and services."""
    return {k: prop[k] for k in ("identifier", "name", "dataType")}


def _post_event(properties: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "identifier": "post",
        "name": "post",
        "type": "info",
        "required": True,
        "desc": "属性上报",
        "method": "thing.event.property.post",
        "outputData": [_as_param(p) for p in properties],
    }


def _builtin_services(model: ThingModel, properties: list[dict[str, Any]]) -> list[dict[str, Any]]:
    common = {"callType": "async", "required": True}
    writable = [p for p in properties if p["accessMode"] == Access.READ_WRITE.value]
    set_service = {
        "identifier": "set",
        "name": "set",
        **common,
        "desc": "属性设置",
        "method": "thing.service.property.set",
        "inputData": [_as_param(p) for p in writable],
        "outputData": [],
    }
    get_service = {
        "identifier": "get",
        "name": "get",
        **common,
        "desc": "属性获取",
        "method": "thing.service.property.get",
        "inputData": [p["identifier"] for p in properties],
        "outputData": [_as_param(p) for p in properties],
    }
    return [set_service, get_service]


def _write_events(losses: _Losses, events: tuple[Event, ...]) -> list[dict[str, Any]]:
    written = []
    for event in events:
        where = f"event {event.id!r}"
        if event.id in _BUILTIN_EVENTS:
            losses.add(f"{where}: clashes with TSL's built-in property event (not exported)")
            continue
        out: dict[str, Any] = {
            "identifier": event.id,
            "name": _name(event.title, event.id),
            "type": event.level.value,
            "required": False,
        }
        if event.description:
            out["desc"] = event.description
        out["method"] = f"thing.event.{event.id}.post"
        out["outputData"] = _write_fields(losses, event.outputs, f"{where} output")
        out.update(_own_extensions(losses, event.extensions, where, _EVENT_KEYS))
        written.append(out)
    return written


def _write_services(losses: _Losses, model: ThingModel) -> list[dict[str, Any]]:
    written = []
    for service in model.services:
        where = f"service {service.id!r}"
        if service.id in _BUILTIN_SERVICES:
            losses.add(f"{where}: clashes with TSL's built-in property service (not exported)")
            continue
        out: dict[str, Any] = {
            "identifier": service.id,
            "name": _name(service.title, service.id),
            "callType": service.call_type.value,
            "required": False,
        }
        if service.description:
            out["desc"] = service.description
        out["method"] = f"thing.service.{service.id}"
        out["inputData"] = _write_fields(losses, service.inputs, f"{where} input")
        out["outputData"] = _write_fields(losses, service.outputs, f"{where} output")
        out.update(_own_extensions(losses, service.extensions, where, _SERVICE_KEYS))
        written.append(out)
    return written


def _write_fields(losses: _Losses, fields: tuple[Field, ...], where: str) -> list[dict[str, Any]]:
    written = []
    for item in fields:
        item_where = f"{where} {item.id!r}"
        if not item.required:
            losses.add(f"{item_where}: optional (TSL parameters are always present)")
        out: dict[str, Any] = {"identifier": item.id, "name": _name(item.title, item.id)}
        if item.description:
            out["desc"] = item.description
        out["dataType"] = _write_schema(losses, item.schema, item_where)
        written.append(out)
    return written


# ------------------------------------------------------------------ data types

_APPLICABLE: Mapping[DataType, frozenset[str]] = {
    **dict.fromkeys(
        (DataType.INT32, DataType.INT64, DataType.FLOAT, DataType.DOUBLE),
        frozenset({"minimum", "maximum", "step", "unit", "unit_name"}),
    ),
    DataType.TEXT: frozenset({"max_length"}),
    DataType.ENUM: frozenset({"enum"}),
    DataType.BOOL: frozenset({"bool_labels"}),
    DataType.TIMESTAMP: frozenset(),
    DataType.STRUCT: frozenset({"fields"}),
    DataType.ARRAY: frozenset({"items", "max_items"}),
}


def _write_schema(losses: _Losses, schema: DataSchema, where: str) -> dict[str, Any]:
    """A TSL ``dataType`` object; fields its type does not use are losses."""
    applicable = _APPLICABLE[schema.type]
    for spec in dataclasses.fields(DataSchema):
        if spec.name == "type" or spec.name in applicable:
            continue
        if getattr(schema, spec.name) != spec.default:
            losses.add(f"{where}: {spec.name} on {schema.type}")
    return _SCHEMA_WRITERS[schema.type](losses, schema, where)


def _number_text(value: int | float) -> str:
    """A TSL numeric spec: an integral float without ``.0`` (``"5"``), others as repr."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _write_numeric(losses: _Losses, schema: DataSchema, where: str) -> dict[str, Any]:
    low, high = schema.minimum, schema.maximum
    if schema.type is DataType.INT64:
        losses.add(f"{where}: int64 exported as int (32-bit)")
        low, high = _clamp_int32(losses, low, high, where)
    specs: dict[str, str] = {}
    for key, value in (("min", low), ("max", high), ("step", schema.step)):
        if value is not None:
            specs[key] = _number_text(value)
    if schema.unit is not None:
        specs["unit"] = schema.unit
    if schema.unit_name is not None:
        specs["unitName"] = schema.unit_name
    return {"type": _TYPE_NAMES[schema.type], "specs": specs}


def _clamp_int32(
    losses: _Losses, low: float | None, high: float | None, where: str
) -> tuple[float | None, float | None]:
    outside = [v for v in (low, high) if v is not None and not _INT32_MIN <= v <= _INT32_MAX]
    if outside:
        losses.add(f"{where}: int64 range [{low}, {high}] clamped to 32 bits")
    return _clamp(low), _clamp(high)


def _clamp(value: float | None) -> float | None:
    return None if value is None else min(max(value, _INT32_MIN), _INT32_MAX)


def _write_text(losses: _Losses, schema: DataSchema, where: str) -> dict[str, Any]:
    specs = {} if schema.max_length is None else {"length": str(schema.max_length)}
    return {"type": "text", "specs": specs}


def _write_enum(losses: _Losses, schema: DataSchema, where: str) -> dict[str, Any]:
    if any(member.description for member in schema.enum):
        losses.add(f"{where}: enum member descriptions")
    if any(not isinstance(member.value, int) for member in schema.enum):
        losses.add(f"{where}: enum with text values (exported as text)")
        longest = max(len(str(member.value)) for member in schema.enum)
        return {"type": "text", "specs": {"length": str(longest)}}
    return {"type": "enum", "specs": {str(m.value): m.label for m in schema.enum}}


def _write_bool(losses: _Losses, schema: DataSchema, where: str) -> dict[str, Any]:
    labels = schema.bool_labels
    return {"type": "bool", "specs": {} if labels is None else {"0": labels[0], "1": labels[1]}}


def _write_date(losses: _Losses, schema: DataSchema, where: str) -> dict[str, Any]:
    return {"type": "date", "specs": {}}


def _write_struct(losses: _Losses, schema: DataSchema, where: str) -> dict[str, Any]:
    return {"type": "struct", "specs": _write_fields(losses, schema.fields, f"{where} field")}


def _write_array(losses: _Losses, schema: DataSchema, where: str) -> dict[str, Any]:
    specs: dict[str, Any] = {}
    if schema.max_items is not None:
        specs["size"] = str(schema.max_items)
    items = schema.items
    if items is None:
        losses.add(f"{where}: array without an item type (exported as text items)")
        items = DataSchema(DataType.TEXT)
    item_name = _TYPE_NAMES[items.type]
    if items.type is DataType.ARRAY:
        losses.add(f"{where}: array of arrays")
    elif item_name not in _ARRAY_ITEM_TYPES:
        losses.add(
            f"{where}: array of {items.type} (TSL arrays hold int, float, double, text, struct)"
        )
    specs["item"] = _write_schema(losses, items, f"{where} item")
    return {"type": "array", "specs": specs}


_SchemaWriter = Callable[[_Losses, DataSchema, str], dict[str, Any]]
_SCHEMA_WRITERS: Mapping[DataType, _SchemaWriter] = {
    DataType.INT32: _write_numeric,
    DataType.INT64: _write_numeric,
    DataType.FLOAT: _write_numeric,
    DataType.DOUBLE: _write_numeric,
    DataType.TEXT: _write_text,
    DataType.ENUM: _write_enum,
    DataType.BOOL: _write_bool,
    DataType.TIMESTAMP: _write_date,
    DataType.STRUCT: _write_struct,
    DataType.ARRAY: _write_array,
}
