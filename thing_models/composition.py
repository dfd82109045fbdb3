"""Resolving composition: ``extends`` (inheritance) and ``components`` (sub-models by instance).

:func:`flatten` turns a model that extends a parent or includes components into one flat model,
the form the telemetry validator and the edge agent work with:

* ``extends``: the parent's affordances come first; the child adds its own and may redefine a
  parent's affordance with the same id (the child's definition wins). Bindings merge per
  protocol and per point (the child's point for a property replaces the parent's).
* ``components``: each component's affordances appear as ``instance:id`` (e.g. ``health:battery``).
  A component's own bindings are not copied: the including model binds ``instance:id`` targets.

Models are found through a :class:`ModelSource`: a folder of model files, or memory (tests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from thing_models.errors import ModelLoadError, UnresolvedReferenceError
from thing_models.model import (
    Bindings,
    Event,
    ModelRef,
    Property,
    ReportGroup,
    Reporting,
    Service,
    ThingModel,
)
from thing_models.yaml_source import Limits

__all__ = ["FolderModelSource", "MemoryModelSource", "ModelSource", "flatten"]

MAX_COMPOSITION_DEPTH = 8


class ModelSource(Protocol):
    """Finds the newest model matching a reference, or None."""

    def find(self, ref: ModelRef) -> ThingModel | None: ...


class MemoryModelSource:
    """Models held in memory."""

    def __init__(self, models: Iterable[ThingModel] = ()) -> None:
        self._models: list[ThingModel] = list(models)

    def add(self, model: ThingModel) -> None:
        self._models.append(model)

    def find(self, ref: ModelRef) -> ThingModel | None:
        matches = [m for m in self._models if m.name == ref.name and ref.matches(m.version)]
        return max(matches, key=lambda m: m.version, default=None)


class FolderModelSource:
    """YAML model files (``*.yaml``/``*.yml``) in a folder, read once on first use.

    Files that do not load are skipped here; ``thing-model validate`` reports them.
    """

    def __init__(self, folder: str | Path, limits: Limits | None = None) -> None:
        self.folder = Path(folder)
        self._limits = limits
        self._files: dict[Path, ThingModel] | None = None
        self._memory = MemoryModelSource()

    @property
    def files(self) -> Mapping[Path, ThingModel]:
        """The model of each file that loads, by path, in file-name order."""
        return self._load()

    def _load(self) -> dict[Path, ThingModel]:
        if self._files is None:
            from thing_models.yaml_format import load_model_file

            self._files = {}
            for path in sorted(self.folder.glob("*.y*ml")):
                try:
                    self._files[path] = load_model_file(path, self._limits)
                except ModelLoadError:
                    continue
            for model in self._files.values():
                self._memory.add(model)
        return self._files

    @property
    def models(self) -> tuple[ThingModel, ...]:
        return tuple(self.files.values())

    def find(self, ref: ModelRef) -> ThingModel | None:
        self._load()
        return self._memory.find(ref)


def flatten(model: ThingModel, source: ModelSource) -> ThingModel:
    """``model`` with its parent and components resolved into one flat model."""
    return _flatten(model, source, (str(model.ref),))


def _flatten(model: ThingModel, source: ModelSource, chain: tuple[str, ...]) -> ThingModel:
    if model.extends is None and not model.components:
        return model
    if len(chain) > MAX_COMPOSITION_DEPTH:
        raise UnresolvedReferenceError(
            chain[-1],
            f"composition nested deeper than {MAX_COMPOSITION_DEPTH} levels: " + " -> ".join(chain),
        )
    properties: Sequence[Property] = ()
    events: Sequence[Event] = ()
    services: Sequence[Service] = ()
    bindings = Bindings()
    if model.extends is not None:
        parent = _resolve(model.extends, source, chain, "extends")
        properties, events, services = parent.properties, parent.events, parent.services
        bindings = parent.bindings
    for component in model.components:
        sub = _resolve(component.model, source, chain, f"component {component.instance!r}")
        prefix = component.instance + ":"
        properties = (
            *properties,
            *(dataclasses.replace(p, id=prefix + p.id) for p in sub.properties),
        )
        events = (*events, *(dataclasses.replace(e, id=prefix + e.id) for e in sub.events))
        services = (*services, *(dataclasses.replace(s, id=prefix + s.id) for s in sub.services))
    return dataclasses.replace(
        model,
        extends=None,
        components=(),
        properties=_override(properties, model.properties),
        events=_override(events, model.events),
        services=_override(services, model.services),
        bindings=_merge_bindings(bindings, model.bindings),
    )


def _resolve(ref: ModelRef, source: ModelSource, chain: tuple[str, ...], role: str) -> ThingModel:
    found = source.find(ref)
    if found is None:
        raise UnresolvedReferenceError(str(ref), f"{role} of {chain[-1]}: no such model found")
    key = str(found.ref)
    if key in chain:
        raise UnresolvedReferenceError(str(ref), "composition cycle: " + " -> ".join((*chain, key)))
    return _flatten(found, source, (*chain, key))


_T = TypeVar("_T", Property, Event, Service)


def _override(inherited: Sequence[_T], own: Sequence[_T]) -> tuple[_T, ...]:
    own_ids = {item.id for item in own}
    kept: list[_T] = [item for item in inherited if item.id not in own_ids]
    kept.extend(own)
    return tuple(kept)


def _merge_bindings(parent: Bindings, child: Bindings) -> Bindings:
    merged = {}
    for name in ("modbus", "bacnet", "mqtt", "coap"):
        base, own = getattr(parent, name), getattr(child, name)
        if base is None or own is None:
            merged[name] = own if own is not None else base
            continue
        bound = {p.property for p in own.points}
        points = (*(p for p in base.points if p.property not in bound), *own.points)
        merged[name] = dataclasses.replace(own, points=points)
    groups = {g.name: g for g in parent.reporting.groups}
    groups.update({g.name: g for g in child.reporting.groups})
    default = (
        child.reporting.default if child.reporting != Reporting() else parent.reporting.default
    )
    return Bindings(
        modbus=merged["modbus"],
        bacnet=merged["bacnet"],
        mqtt=merged["mqtt"],
        coap=merged["coap"],
        reporting=Reporting(default, tuple(ReportGroup(g.name, g.policy) for g in groups.values())),
    )
