"""Our YAML model format: read (with located errors) and write the canonical model.

The format is documented in ``docs/model-format.md``. Reading checks the document's shape here,
the bindings in :mod:`thing_models.bindings_format`, and the model's consistency in
:mod:`thing_models.checks`; every problem is reported, each with ``file:line:column``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any

from thing_models import bindings_format, checks
from thing_models.document_reader import DocumentReader
from thing_models.errors import Diagnostic, HostileInputError, ModelLoadError, SourceLocation
from thing_models.model import (
    IDENTIFIER_RE,
    MODEL_NAME_RE,
    Access,
    CallType,
    Component,
    DataSchema,
    DataType,
    EnumValue,
    Event,
    EventLevel,
    Field,
    ModelRef,
    Property,
    SemVer,
    Service,
    ThingModel,
)
from thing_models.yaml_source import Limits, Path, SourceMap, dump_yaml, parse_yaml

__all__ = [
    "dump_model_yaml",
    "load_model_file",
    "load_model_text",
    "model_from_dict",
    "model_to_dict",
]

MAX_SCHEMA_DEPTH = 16

_TOP_KEYS = (
    "model",
    "version",
    "title",
    "description",
    "vendor",
    "extends",
    "components",
    "properties",
    "events",
    "services",
    "bindings",
    "extensions",
)
_SCHEMA_KEYS = (
    "type",
    "min",
    "max",
    "step",
    "unit",
    "unit_name",
    "max_length",
    "values",
    "labels",
    "fields",
    "items",
    "max_items",
)
_FIELD_KEYS = ("id", "title", "description", "required", *_SCHEMA_KEYS)
_PROPERTY_KEYS = ("id", "title", "description", "access", "required", "extensions", *_SCHEMA_KEYS)
_EVENT_KEYS = ("id", "title", "description", "level", "outputs", "extensions")
_SERVICE_KEYS = ("id", "title", "description", "call", "inputs", "outputs", "extensions")
_COMPONENT_KEYS = ("instance", "model", "title", "description")
_TYPE_ALIASES = {
    "int": DataType.INT32,
    "date": DataType.TIMESTAMP,
    "string": DataType.TEXT,
    "boolean": DataType.BOOL,
}
#: Stands in for a data schema already reported as invalid, so that what refers to it (a binding,
#: an array's items, a struct's only field) is not reported a second time. A model holding it is
#: never returned: the ModelLoadError is.
_INVALID_SCHEMA = DataSchema(DataType.TEXT)
_TYPE_NAMES = frozenset({t.value for t in DataType} | set(_TYPE_ALIASES))
_ACCESS_ALIASES = {
    "read": Access.READ,
    "read-write": Access.READ_WRITE,
    "readwrite": Access.READ_WRITE,
}


# =========================================================================== loading


def load_model_file(path: str | FsPath, limits: Limits | None = None) -> ThingModel:
    """Read and check a YAML model file; raises ModelLoadError listing every problem."""
    file = FsPath(path)
    limits = limits or Limits()
    try:
        size = file.stat().st_size
        if size > limits.max_bytes:
            # Refuse before reading a huge file into memory, naming its real size.
            raise HostileInputError(
                [
                    Diagnostic(
                        SourceLocation(str(file)),
                        f"document is {size} bytes, over the limit of {limits.max_bytes} bytes",
                        expected="a smaller file",
                    )
                ]
            )
        data = file.read_bytes()
    except OSError as exc:
        raise ModelLoadError(
            [Diagnostic(SourceLocation(str(file)), f"cannot read file: {exc.strerror}")]
        ) from exc
    return load_model_text(data, str(file), limits)


def load_model_text(
    data: bytes | str, source: str = "<string>", limits: Limits | None = None
) -> ThingModel:
    """Parse YAML text into a checked ThingModel."""
    document, smap = parse_yaml(data, source, limits)
    return model_from_dict(document, smap)


def model_from_dict(document: Any, smap: SourceMap | None = None) -> ThingModel:
    """Build a ThingModel from parsed YAML data; raises ModelLoadError listing every problem."""
    reader = DocumentReader(smap or SourceMap("<model>"))
    model = _ModelParser(reader).parse(document)
    if model is not None:
        for problem in checks.check_model(model):
            reader.error(
                reader.document_path(problem.path),
                problem.message,
                problem.value,
                problem.expected,
            )
    if reader.diagnostics or model is None:
        raise ModelLoadError(_sorted(reader))
    return model


def _sorted(reader: DocumentReader) -> list[Any]:
    return sorted(reader.diagnostics, key=lambda d: (d.location.line, d.location.column))


class _ModelParser:
    def __init__(self, reader: DocumentReader) -> None:
        self.r = reader

    def parse(self, document: Any) -> ThingModel | None:
        root = self.r.mapping(document, (), "a mapping with model, version, properties, ...")
        if root is None:
            return None
        r = self.r
        r.check_keys(root, (), _TOP_KEYS, required=("model", "version"))
        name = r.string(
            root,
            "model",
            (),
            pattern=MODEL_NAME_RE,
            expected="namespace/name, e.g. com.acme.energy/meter-3p",
        )
        version = self._version(root)
        extends = self._ref(root, "extends", ())
        components = r.items(root.get("components"), ("components",), self._component)
        properties = r.items(root.get("properties"), ("properties",), self._property)
        events = r.items(root.get("events"), ("events",), self._event)
        services = r.items(root.get("services"), ("services",), self._service)
        bindings = bindings_format.parse_bindings(r, root.get("bindings"), ("bindings",))
        extensions = self._extensions(root, ())
        # A broken name or version is already reported; keep going so the consistency checks
        # below still report everything else.
        return ThingModel(
            name=name or "invalid/invalid",
            version=version or SemVer(0, 0, 0),
            title=r.string(root, "title", ()),
            description=r.string(root, "description", (), max_length=65536),
            vendor=r.string(root, "vendor", ()),
            extends=extends,
            components=components,
            properties=properties,
            events=events,
            services=services,
            bindings=bindings,
            extensions=extensions,
        )

    def _version(self, root: Mapping[Any, Any]) -> SemVer | None:
        if root.get("version") is None:  # missing or empty: reported by check_keys
            return None
        raw = root["version"]
        try:
            return SemVer.parse(str(raw) if isinstance(raw, int | float) else raw)
        except ValueError:
            self.r.error(
                ("version",),
                "invalid version",
                raw,
                'a semantic version MAJOR.MINOR.PATCH, quoted, e.g. "1.0.0"',
            )
            return None

    def _ref(self, obj: Mapping[Any, Any], key: str, path: Path) -> ModelRef | None:
        if key not in obj or obj[key] is None:
            return None
        raw = obj[key]
        try:
            if not isinstance(raw, str):
                raise ValueError(raw)
            return ModelRef.parse(raw)
        except ValueError:
            self.r.error(
                (*path, key),
                f"invalid {key} reference",
                raw,
                "namespace/name@version, e.g. com.acme/base-meter@1",
            )
            return None

    def _extensions(self, obj: Mapping[Any, Any], path: Path) -> dict[str, Any]:
        value = obj.get("extensions")
        if value is None:
            return {}
        mapping = self.r.mapping(value, (*path, "extensions"))
        return dict(mapping) if mapping is not None else {}

    def _identifier(self, obj: Mapping[Any, Any], key: str, path: Path) -> str:
        """The identifier at ``key``. An invalid string is reported but still returned, so
        that references to it are not reported a second time."""
        if key not in obj:
            return ""
        raw = obj[key]
        self.r.string(
            obj,
            key,
            path,
            pattern=IDENTIFIER_RE,
            expected="an identifier: a letter or _, then letters, digits or _, at most 50",
        )
        return raw if isinstance(raw, str) else ""

    def _component(self, item: Any, path: Path) -> Component | None:
        obj = self.r.mapping(item, path)
        if obj is None:
            return None
        self.r.check_keys(obj, path, _COMPONENT_KEYS, required=("instance", "model"))
        instance = self._identifier(obj, "instance", path)
        ref = self._ref(obj, "model", path)
        if not instance or ref is None:
            return None
        return Component(
            instance,
            ref,
            self.r.string(obj, "title", path),
            self.r.string(obj, "description", path),
        )

    def _property(self, item: Any, path: Path) -> Property | None:
        obj = self.r.mapping(item, path, "a property mapping with id and type")
        if obj is None:
            return None
        self.r.check_keys(obj, path, _PROPERTY_KEYS, required=("id", "type"))
        prop_id = self._identifier(obj, "id", path)
        schema = self.schema(obj, path, 0)
        access = self.r.choice(obj, "access", path, Access, Access.READ, _ACCESS_ALIASES)
        if not prop_id:
            return None
        return Property(
            id=prop_id,
            schema=schema or _INVALID_SCHEMA,
            title=self.r.string(obj, "title", path),
            description=self.r.string(obj, "description", path),
            access=access,
            required=self.r.boolean(obj, "required", path, False),
            extensions=self._extensions(obj, path),
        )

    def _fields(self, value: Any, path: Path, depth: int) -> tuple[Field, ...]:
        return self.r.items(value, path, lambda item, p: self._field(item, p, depth))

    def _field(self, item: Any, path: Path, depth: int) -> Field | None:
        obj = self.r.mapping(item, path, "a field mapping with id and type")
        if obj is None:
            return None
        self.r.check_keys(obj, path, _FIELD_KEYS, required=("id", "type"))
        field_id = self._identifier(obj, "id", path)
        schema = self.schema(obj, path, depth)
        if not field_id:
            return None
        return Field(
            field_id,
            schema or _INVALID_SCHEMA,
            self.r.string(obj, "title", path),
            self.r.string(obj, "description", path),
            self.r.boolean(obj, "required", path, True),
        )

    def _event(self, item: Any, path: Path) -> Event | None:
        obj = self.r.mapping(item, path, "an event mapping with id")
        if obj is None:
            return None
        self.r.check_keys(obj, path, _EVENT_KEYS, required=("id",))
        event_id = self._identifier(obj, "id", path)
        level = self.r.choice(
            obj,
            "level",
            path,
            EventLevel,
            EventLevel.INFO,
            {"warning": EventLevel.ALERT, "warn": EventLevel.ALERT},
        )
        outputs = self._fields(obj.get("outputs"), (*path, "outputs"), 0)
        if not event_id:
            return None
        return Event(
            event_id,
            level,
            outputs,
            self.r.string(obj, "title", path),
            self.r.string(obj, "description", path),
            self._extensions(obj, path),
        )

    def _service(self, item: Any, path: Path) -> Service | None:
        obj = self.r.mapping(item, path, "a service mapping with id")
        if obj is None:
            return None
        self.r.check_keys(obj, path, _SERVICE_KEYS, required=("id",))
        service_id = self._identifier(obj, "id", path)
        call = self.r.choice(obj, "call", path, CallType, CallType.ASYNC)
        inputs = self._fields(obj.get("inputs"), (*path, "inputs"), 0)
        outputs = self._fields(obj.get("outputs"), (*path, "outputs"), 0)
        if not service_id:
            return None
        return Service(
            service_id,
            call,
            inputs,
            outputs,
            self.r.string(obj, "title", path),
            self.r.string(obj, "description", path),
            self._extensions(obj, path),
        )

    # ------------------------------------------------------------------ data schemas

    def schema(self, obj: Mapping[Any, Any], path: Path, depth: int) -> DataSchema | None:
        """Read the data-schema keys of ``obj`` (a property, field, or array ``items``)."""
        if depth > MAX_SCHEMA_DEPTH:
            self.r.error(
                path,
                f"data type nested deeper than {MAX_SCHEMA_DEPTH} levels",
                expected=f"at most {MAX_SCHEMA_DEPTH} levels of struct/array",
            )
            return None
        if "type" not in obj:
            return None
        dtype = self.r.choice(obj, "type", path, DataType, DataType.TEXT, _TYPE_ALIASES)
        raw_type = obj.get("type")
        if not isinstance(raw_type, str) or raw_type not in _TYPE_NAMES:
            return None
        r = self.r
        step = r.number(obj, "step", path)
        minimum = r.number(obj, "min", path)
        maximum = r.number(obj, "max", path)
        enum = self._enum(obj.get("values"), (*path, "values")) if "values" in obj else ()
        labels = self._labels(obj.get("labels"), (*path, "labels")) if "labels" in obj else None
        fields = self._fields(obj.get("fields"), (*path, "fields"), depth + 1)
        items: DataSchema | None = None
        if "items" in obj:
            items = _INVALID_SCHEMA
            items_obj = r.mapping(obj["items"], (*path, "items"), "a mapping with type")
            if items_obj is not None:
                r.check_keys(items_obj, (*path, "items"), _SCHEMA_KEYS, required=("type",))
                items = self.schema(items_obj, (*path, "items"), depth + 1) or _INVALID_SCHEMA
        return DataSchema(
            type=dtype,
            minimum=minimum,
            maximum=maximum,
            step=step,
            unit=r.string(obj, "unit", path) or None,
            unit_name=r.string(obj, "unit_name", path) or None,
            max_length=r.integer(obj, "max_length", path),
            enum=enum,
            bool_labels=labels,
            fields=fields,
            items=items,
            max_items=r.integer(obj, "max_items", path),
        )

    def _enum(self, value: Any, path: Path) -> tuple[EnumValue, ...]:
        members: list[EnumValue] = []
        if isinstance(value, dict):
            for key, label in value.items():
                if isinstance(key, bool) or not isinstance(key, int | str):
                    self.r.error(
                        (*path, key),
                        "enum value must be an integer or a string",
                        key,
                        "an integer or string key",
                        at_key=True,
                    )
                elif not isinstance(label, str):
                    self.r.error((*path, key), "enum label must be a string", label, "a string")
                else:
                    members.append(EnumValue(key, label))
            return tuple(members)
        for i, item in enumerate(self.r.sequence(value, path, "a mapping of value: label")):
            obj = self.r.mapping(item, (*path, i), "a mapping with value and label")
            if obj is None:
                continue
            self.r.check_keys(
                obj, (*path, i), ("value", "label", "description"), required=("value", "label")
            )
            raw = obj.get("value")
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                self.r.error(
                    (*path, i, "value"),
                    "enum value must be an integer or a string",
                    raw,
                    "an integer or a string",
                )
                continue
            members.append(
                EnumValue(
                    raw,
                    self.r.string(obj, "label", (*path, i)),
                    self.r.string(obj, "description", (*path, i)),
                )
            )
        return tuple(members)

    def _labels(self, value: Any, path: Path) -> tuple[str, str] | None:
        obj = self.r.mapping(value, path, "a mapping {false: label, true: label}")
        if obj is None:
            return None
        if set(obj) != {False, True} and set(obj) != {"false", "true"}:
            self.r.error(
                path, "labels need both false and true", obj, "{false: label, true: label}"
            )
            return None
        false_label = obj.get(False, obj.get("false"))
        true_label = obj.get(True, obj.get("true"))
        if not isinstance(false_label, str) or not isinstance(true_label, str):
            self.r.error(path, "labels must be strings", obj, "{false: label, true: label}")
            return None
        return (false_label, true_label)


# =========================================================================== writing


def model_to_dict(model: ThingModel) -> dict[str, Any]:
    """The canonical YAML form of ``model`` as plain data (defaults left out)."""
    doc: dict[str, Any] = {"model": model.name, "version": str(model.version)}
    for key in ("title", "description", "vendor"):
        if getattr(model, key):
            doc[key] = getattr(model, key)
    if model.extends is not None:
        doc["extends"] = str(model.extends)
    if model.components:
        doc["components"] = [
            _strip(
                {
                    "instance": c.instance,
                    "model": str(c.model),
                    "title": c.title,
                    "description": c.description,
                }
            )
            for c in model.components
        ]
    if model.properties:
        doc["properties"] = [_property_dict(p) for p in model.properties]
    if model.events:
        doc["events"] = [_event_dict(e) for e in model.events]
    if model.services:
        doc["services"] = [_service_dict(s) for s in model.services]
    bindings = bindings_format.bindings_to_dict(model.bindings)
    if bindings:
        doc["bindings"] = bindings
    if model.extensions:
        doc["extensions"] = dict(model.extensions)
    return doc


def dump_model_yaml(model: ThingModel) -> str:
    """``model`` as YAML text in the canonical key order."""
    return dump_yaml(model_to_dict(model))


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v not in ("", None, (), [], {})}


def _property_dict(prop: Property) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": prop.id, "title": prop.title, "description": prop.description}
    doc.update(_schema_dict(prop.schema))
    if prop.access is not Access.READ:
        doc["access"] = prop.access.value
    if prop.required:
        doc["required"] = True
    if prop.extensions:
        doc["extensions"] = dict(prop.extensions)
    return _strip(doc)


def _field_dict(item: Field) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": item.id, "title": item.title, "description": item.description}
    doc.update(_schema_dict(item.schema))
    if not item.required:
        doc["required"] = False
    return _strip(doc)


def _event_dict(event: Event) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": event.id,
        "title": event.title,
        "description": event.description,
        "level": event.level.value,
        "outputs": [_field_dict(f) for f in event.outputs],
    }
    if event.extensions:
        doc["extensions"] = dict(event.extensions)
    return _strip(doc)


def _service_dict(service: Service) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": service.id,
        "title": service.title,
        "description": service.description,
        "call": service.call_type.value,
        "inputs": [_field_dict(f) for f in service.inputs],
        "outputs": [_field_dict(f) for f in service.outputs],
    }
    if service.extensions:
        doc["extensions"] = dict(service.extensions)
    return _strip(doc)


def _schema_dict(schema: DataSchema) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": schema.type.value}
    for key, value in (
        ("min", schema.minimum),
        ("max", schema.maximum),
        ("step", schema.step),
        ("unit", schema.unit),
        ("unit_name", schema.unit_name),
        ("max_length", schema.max_length),
        ("max_items", schema.max_items),
    ):
        if value is not None:
            doc[key] = value
    if schema.enum:
        if any(m.description for m in schema.enum):
            # value and label are required even when empty ("" is a valid enum value/label).
            doc["values"] = [
                {"value": m.value, "label": m.label, **_strip({"description": m.description})}
                for m in schema.enum
            ]
        else:
            doc["values"] = {m.value: m.label for m in schema.enum}
    if schema.bool_labels is not None:
        doc["labels"] = {False: schema.bool_labels[0], True: schema.bool_labels[1]}
    if schema.fields:
        doc["fields"] = [_field_dict(f) for f in schema.fields]
    if schema.items is not None:
        doc["items"] = _schema_dict(schema.items)
    return doc
