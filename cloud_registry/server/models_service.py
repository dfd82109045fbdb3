"""ModelService: publish, read, list, diff and export thing models.

Publishing takes the model *text* (our YAML, Alibaba TSL JSON, or a WoT TM/TD JSON document,
detected from its content) and:

1. parses it under the thing-model hostile-input limits (size, depth, alias bombs): problems are
   INVALID_ARGUMENT with one field violation per diagnostic;
2. resolves ``extends`` and components against the published models (a missing one:
   FAILED_PRECONDITION ``UNRESOLVED_REFERENCE``); WoT references are not fetched, so a TM with
   ``tm:extends``/``tm:ref`` links must be resolved by the client first;
3. compares it with the newest published version of that name: an equal version with another
   document is ALREADY_EXISTS (the same document again: ``unchanged``); a lower version, or a
   bump smaller than ``thing-model diff`` requires, is FAILED_PRECONDITION (``VERSION_BUMP``
   violations name the offending changes);
4. stores the canonical YAML form (``dry_run``: stores nothing).

The CPU-bound work (parsing, diffing) runs in the storage worker pool, not on the event loop.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass
from typing import Any

from grpc import aio

from cloud_registry.api.v1 import common_pb2, models_pb2, models_pb2_grpc
from cloud_registry.server import convert
from cloud_registry.server.context import ServiceContext
from cloud_registry.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    Violation,
    handle_errors,
)
from cloud_registry.storage.base import AlreadyExists, ModelEntry, NotFound, Storage
from thing_models.composition import flatten
from thing_models.diff import ModelDiff, Severity, check_version_bump, diff_models
from thing_models.errors import (
    ModelLoadError,
    VersionBumpError,
)
from thing_models.formats import Imported, detect
from thing_models.formats.detect import EXPORT_FORMATS, export_model
from thing_models.model import ModelRef, SemVer, ThingModel
from thing_models.telemetry import ModelValidator, compile_validator
from thing_models.yaml_format import dump_model_yaml, model_from_dict, model_to_dict
from thing_models.yaml_source import Limits, SourceMap

__all__ = [
    "MEDIA_TYPES",
    "ModelCatalog",
    "ModelServicer",
    "canonical_model",
    "import_text",
    "model_from_stored",
    "register",
    "stored_document",
]

#: Where diagnostics of a published document point (``document:3:5``).
SOURCE = "document"
MEDIA_TYPES = {
    "yaml": "application/yaml",
    "tsl": "application/json",
    "wot-td": "application/td+json",
    "wot-tm": "application/tm+json",
}


# --------------------------------------------------------------------------- the catalog


class ModelCatalog:
    """Published models as :class:`ThingModel` objects, flattened models and compiled
    validators, cached by exact reference (a published version never changes). Blocking (it
    reads storage) and thread-safe: call it from worker threads. It is also the
    ``thing_models.ModelSource`` that resolves ``extends`` and components."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._lock = threading.Lock()
        self._models: dict[str, ThingModel] = {}
        self._flat: dict[str, ThingModel] = {}
        self._validators: dict[str, ModelValidator] = {}
        self._yaml: dict[str, str] = {}

    def entry(self, ref: ModelRef) -> ModelEntry:
        """The published entry ``ref`` names: exact, partial (the newest match) or bare (the
        newest); NotFound otherwise."""
        if _is_exact(ref.version):
            try:
                return self._storage.get_model(ref.name, ref.version)
            except NotFound:
                raise NotFound(f"model {ref} is not published") from None
        if not ref.version:
            try:
                return self._storage.get_model(ref.name)
            except NotFound:
                raise NotFound(f"model {ref.name} is not published") from None
        for entry in self._storage.list_model_versions(ref.name):  # newest first
            if ref.matches(SemVer.parse(entry.version)):
                return entry
        raise NotFound(f"no published version of {ref.name} matches {ref}")

    def model(self, entry: ModelEntry) -> ThingModel:
        """The model of a stored entry (as written: not flattened)."""
        key = f"{entry.name}@{entry.version}"
        cached = self._models.get(key)
        if cached is not None:
            return cached
        try:
            model = model_from_stored(entry.document, key)
        except ModelLoadError as exc:
            raise FailedPrecondition(
                f"stored model {key} no longer loads: {str(exc).splitlines()[0]}"
            ) from exc
        with self._lock:
            self._models[key] = model
        return model

    def find(self, ref: ModelRef) -> ThingModel | None:
        """``ModelSource.find``: the newest published model matching ``ref``, or None."""
        try:
            return self.model(self.entry(ref))
        except NotFound:
            return None

    def flat(self, exact_ref: str) -> ThingModel:
        """The flattened model of an exact reference ``name@version``."""
        cached = self._flat.get(exact_ref)
        if cached is not None:
            return cached
        model = flatten(self.model(self.entry(ModelRef.parse(exact_ref))), self)
        with self._lock:
            self._flat[exact_ref] = model
        return model

    def validator(self, exact_ref: str) -> ModelValidator:
        """The compiled validator of the flattened model ``name@version`` (compiled once)."""
        cached = self._validators.get(exact_ref)
        if cached is not None:
            return cached
        validator = compile_validator(self.flat(exact_ref))
        with self._lock:
            self._validators[exact_ref] = validator
        return validator

    def event_level(self, exact_ref: str, event: str) -> str | None:
        """The level of ``event`` in the flattened model (``info`` when the model cannot be
        loaded: the event is still stored); None when the model has no such event."""
        try:
            model = self.flat(exact_ref)
        except Exception:  # any load problem: store the event, as info
            return "info"
        found = model.event(event)
        return None if found is None else str(found.level)

    def document_yaml(self, entry: ModelEntry) -> str:
        """The canonical YAML text of a stored entry."""
        key = f"{entry.name}@{entry.version}"
        cached = self._yaml.get(key)
        if cached is None:
            cached = dump_model_yaml(self.model(entry))
            with self._lock:
                self._yaml[key] = cached
        return cached

    def resolve_exact(self, text: str) -> str:
        """``name@version`` (exact) of the newest published model matching ``text``."""
        entry = self.entry(ModelRef.parse(text))
        return f"{entry.name}@{entry.version}"


def _is_exact(version: str) -> bool:
    return bool(version) and ("-" in version or version.count(".") == 2)


# --------------------------------------------------------------------------- importing


def import_text(text: str, limits: Limits | None = None) -> Imported:
    """A model document given as text, in any supported format (detected from its content).
    Raises ModelLoadError (HostileInputError) or UnresolvedReferenceError."""
    return detect.import_text(text, SOURCE, limits)


def stored_document(model: ThingModel) -> dict[str, Any]:
    """The canonical YAML form of ``model`` as JSON-safe data, the form the registry stores.

    ``model_to_dict`` keys some mappings by int or bool (int enum ``values``, bool ``labels``,
    binding ``enum`` maps), which a JSON column turns into strings, silently changing the
    model. This writes enum values in their list form and bool labels with ``"false"``/
    ``"true"`` keys (both read back identically by ``model_from_dict``) and binding enum keys
    as digit strings (read back by :func:`model_from_stored`)."""
    document = model_to_dict(model)
    for section, keys in (("properties", None), ("events", ("outputs",))):
        for item in document.get(section, ()):
            if keys is None:
                _safe_schema(item)
            else:
                for key in keys:
                    for field in item.get(key, ()):
                        _safe_schema(field)
    for service in document.get("services", ()):
        for key in ("inputs", "outputs"):
            for field in service.get(key, ()):
                _safe_schema(field)
    for binding in (document.get("bindings") or {}).values():
        for point in binding.get("points", ()) if isinstance(binding, dict) else ():
            if isinstance(point, dict) and isinstance(point.get("enum"), dict):
                point["enum"] = {str(k): v for k, v in point["enum"].items()}
    return document


def _safe_schema(schema: dict[str, Any]) -> None:
    values = schema.get("values")
    if isinstance(values, dict):
        schema["values"] = [{"value": k, "label": v} for k, v in values.items()]
    labels = schema.get("labels")
    if isinstance(labels, dict):
        schema["labels"] = {
            str(k).lower() if isinstance(k, bool) else k: v for k, v in labels.items()
        }
    for field in schema.get("fields", ()):
        _safe_schema(field)
    if isinstance(schema.get("items"), dict):
        _safe_schema(schema["items"])


def canonical_model(model: ThingModel) -> ThingModel:
    """``model`` with what storage engines do not keep in order (JSON object keys: reporting
    groups, binding enum maps) sorted (by name, by raw value), so every engine gives back an
    equal model."""
    bindings = model.bindings
    reporting = bindings.reporting
    changes: dict[str, Any] = {}
    groups = tuple(sorted(reporting.groups, key=lambda g: g.name))
    if groups != reporting.groups:
        changes["reporting"] = dataclasses.replace(reporting, groups=groups)
    for name in ("modbus", "bacnet", "mqtt", "coap"):
        binding = getattr(bindings, name)
        points = getattr(binding, "points", None)
        if not points:
            continue
        ordered = tuple(_sorted_enum_map(p) for p in points)
        if ordered != points:
            changes[name] = dataclasses.replace(binding, points=ordered)
    if not changes:
        return model
    return dataclasses.replace(model, bindings=dataclasses.replace(bindings, **changes))


def _sorted_enum_map(point: Any) -> Any:
    enum_map = getattr(point, "enum_map", ())
    if not enum_map:
        return point
    ordered = tuple(sorted(enum_map, key=lambda pair: pair[0]))
    return point if ordered == enum_map else dataclasses.replace(point, enum_map=ordered)


def model_from_stored(document: Any, source: str = "<stored>") -> ThingModel:
    """The model of a stored document (:func:`stored_document`, after a JSON round trip),
    in :func:`canonical_model` order."""
    if isinstance(document, dict) and isinstance(document.get("bindings"), dict):
        document = dict(document)
        bindings = dict(document["bindings"])
        for name, binding in bindings.items():
            if isinstance(binding, dict) and isinstance(binding.get("points"), list):
                binding = dict(binding)
                binding["points"] = [_revive_point(p) for p in binding["points"]]
                bindings[name] = binding
        document["bindings"] = bindings
    return canonical_model(model_from_dict(document, SourceMap(source)))


def _revive_point(point: Any) -> Any:
    if not isinstance(point, dict) or not isinstance(point.get("enum"), dict):
        return point
    enum = {
        int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k: v
        for k, v in point["enum"].items()
    }
    return {**point, "enum": enum}


def _entry_for(model: ThingModel, now_ms: int) -> ModelEntry:
    return ModelEntry(
        name=model.name,
        version=str(model.version),
        document=stored_document(model),
        published_ms=now_ms,
        title=model.title,
        vendor=model.vendor,
        description=model.description,
        property_count=len(model.properties),
        event_count=len(model.events),
        service_count=len(model.services),
    )


def _plain(document: Any) -> Any:
    """A document as JSON data (tuples as lists), for equality with a stored one."""
    return json.loads(json.dumps(document, sort_keys=True))


@dataclass(frozen=True, slots=True)
class _Published:
    entry: ModelEntry
    yaml: str
    notes: tuple[str, ...]
    unchanged: bool


def _bump_error(diff: ModelDiff, exc: VersionBumpError) -> FailedPrecondition:
    try:
        declared = diff.declared
    except VersionBumpError:
        declared = Severity.NONE
    offending = [c for c in diff.changes if c.severity > declared]
    violations = [
        Violation(c.path, f"[{c.severity.name.lower()}] {c.description}", "VERSION_BUMP")
        for c in offending
    ]
    return FailedPrecondition(str(exc), violations=violations)


def _severity(value: Severity) -> str:
    return value.name.lower()


# --------------------------------------------------------------------------- the servicer

Context = aio.ServicerContext[Any, Any]


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, ctx: ServiceContext, catalog: ModelCatalog) -> None:
        self.ctx = ctx
        self.catalog = catalog
        # Publications are checked against the newest version and then stored: one at a
        # time (per replica), so two concurrent ones cannot both pass against the same newest.
        self._publishing = threading.Lock()

    # ----------------------------------------------------------------- publish

    def _publish(self, text: str, dry_run: bool) -> _Published:
        imported = import_text(text)
        model = canonical_model(imported.model)
        if model.extends is not None or model.components:
            flatten(model, self.catalog)  # every reference must be published
        with self._publishing:
            return self._check_and_store(model, imported.notes, dry_run)

    def _check_and_store(
        self, model: ThingModel, notes: tuple[str, ...], dry_run: bool
    ) -> _Published:
        storage = self.ctx.storage
        version = str(model.version)
        versions = storage.list_model_versions(model.name)
        entry = _entry_for(model, self.ctx.now_ms())
        same = next((v for v in versions if v.version == version), None)
        if same is not None:
            if _plain(same.document) != _plain(entry.document):
                raise AlreadyExists(
                    f"model {model.name}@{version} is already published with another "
                    "document; publish it as a new version"
                )
            return _Published(same, dump_model_yaml(model), notes, True)
        if versions:
            newest = versions[0]
            if model.version < SemVer.parse(newest.version):
                raise FailedPrecondition(
                    f"{model.name}: version {version} is lower than the newest published "
                    f"version {newest.version}; a new version must be higher",
                    violations=[Violation("version", f"newest is {newest.version}", "VERSION")],
                )
            diff = diff_models(self.catalog.model(newest), model)
            try:
                check_version_bump(diff)
            except VersionBumpError as exc:
                raise _bump_error(diff, exc) from exc
        if dry_run:
            return _Published(entry, dump_model_yaml(model), notes, False)
        stored, unchanged = storage.put_model(entry)
        return _Published(stored, dump_model_yaml(model), notes, unchanged)

    @handle_errors
    async def PublishModel(
        self, request: models_pb2.PublishModelRequest, context: Context
    ) -> models_pb2.PublishModelResponse:
        if not request.document.strip():
            raise InvalidArgument.field("document", "required: the model text")
        result = await self.ctx.run(self._publish, request.document, request.dry_run)
        return models_pb2.PublishModelResponse(
            model=convert.model_record_to_pb(result.entry, result.yaml),
            notes=list(result.notes),
            unchanged=result.unchanged,
        )

    # ----------------------------------------------------------------- read

    def _get(self, ref: ModelRef) -> common_pb2.ModelRecord:
        entry = self.catalog.entry(ref)
        return convert.model_record_to_pb(entry, self.catalog.document_yaml(entry))

    @handle_errors
    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: Context
    ) -> common_pb2.ModelRecord:
        ref = convert.check_model_ref(request.ref, "ref")
        return await self.ctx.run(self._get, ref)

    def _list(self, prefix: str, cursor: str, limit: int) -> models_pb2.ListModelsResponse:
        page = self.ctx.storage.list_models(prefix, cursor, limit)
        out = models_pb2.ListModelsResponse(next_page_token=page.next_cursor)
        for entry in page.items:
            count = len(self.ctx.storage.list_model_versions(entry.name))
            out.models.append(convert.model_summary_to_pb(entry, count))
        return out

    @handle_errors
    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context
    ) -> models_pb2.ListModelsResponse:
        limit = convert.check_page_size(request.page_size)
        cursor = convert.check_page_token(request.page_token)
        prefix = convert.check_text(request.name_prefix, "name_prefix", limit=convert.MAX_ID_CHARS)
        return await self.ctx.run(self._list, prefix, cursor, limit)

    @handle_errors
    async def ListModelVersions(
        self, request: models_pb2.ListModelVersionsRequest, context: Context
    ) -> models_pb2.ListModelVersionsResponse:
        ref = convert.check_model_ref(request.name, "name")
        if ref.version:
            raise InvalidArgument.field("name", "a model name without @version")
        versions = await self.ctx.run(self.ctx.storage.list_model_versions, ref.name)
        if not versions:
            raise NotFound(f"model {ref.name} is not published")
        return models_pb2.ListModelVersionsResponse(
            versions=[convert.model_record_to_pb(v) for v in versions]
        )

    # ----------------------------------------------------------------- diff and export

    def _diff(self, old_ref: ModelRef, new_ref: ModelRef) -> models_pb2.DiffModelsResponse:
        old = self.catalog.model(self.catalog.entry(old_ref))
        new = self.catalog.model(self.catalog.entry(new_ref))
        if old.name != new.name:
            raise InvalidArgument.field(
                "new_ref",
                f"{new.name} is another model than {old.name}: a diff compares two versions "
                "of one model",
            )
        diff = diff_models(old, new)
        try:
            declared = _severity(diff.declared)
        except VersionBumpError:
            declared = "backwards"
        return models_pb2.DiffModelsResponse(
            changes=[
                models_pb2.ModelChange(
                    severity=_severity(c.severity), path=c.path, description=c.description
                )
                for c in diff.changes
            ],
            required=_severity(diff.required),
            declared=declared,
            ok=diff.ok,
        )

    @handle_errors
    async def DiffModels(
        self, request: models_pb2.DiffModelsRequest, context: Context
    ) -> models_pb2.DiffModelsResponse:
        violations: list[Violation] = []
        refs: list[ModelRef] = []
        for field in ("old_ref", "new_ref"):
            try:
                refs.append(convert.check_model_ref(getattr(request, field), field))
            except InvalidArgument as exc:
                violations.extend(exc.violations)
        if violations:
            raise InvalidArgument.fields(violations)
        return await self.ctx.run(self._diff, refs[0], refs[1])

    def _export(self, ref: ModelRef, target: str) -> models_pb2.ExportModelResponse:
        model = self.catalog.model(self.catalog.entry(ref))
        if target == "yaml":
            return models_pb2.ExportModelResponse(
                document=dump_model_yaml(model), media_type=MEDIA_TYPES[target]
            )
        exported = export_model(model, target)  # type: ignore[arg-type]
        return models_pb2.ExportModelResponse(
            document=json.dumps(exported.document, indent=2, ensure_ascii=False) + "\n",
            losses=list(exported.losses),
            media_type=MEDIA_TYPES[target],
        )

    @handle_errors
    async def ExportModel(
        self, request: models_pb2.ExportModelRequest, context: Context
    ) -> models_pb2.ExportModelResponse:
        ref = convert.check_model_ref(request.ref, "ref")
        target = request.format or "yaml"
        if target not in EXPORT_FORMATS:
            raise InvalidArgument.field(
                "format",
                f"unknown format {target[:40]!r}; expected one of " + ", ".join(EXPORT_FORMATS),
            )
        return await self.ctx.run(self._export, ref, target)


def register(server: aio.Server, ctx: ServiceContext, catalog: ModelCatalog | None = None) -> None:
    """Add the ModelService to ``server``."""
    models_pb2_grpc.add_ModelServiceServicer_to_server(  # type: ignore[no-untyped-call]
        ModelServicer(ctx, catalog or ModelCatalog(ctx.storage)), server
    )
