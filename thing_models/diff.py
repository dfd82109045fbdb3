"""Compare two versions of one thing model and check that the declared version bump is enough.

Every difference becomes a :class:`Change` with a :class:`Severity`: ``MAJOR`` (breaking),
``MINOR`` (compatible addition or relaxation) or ``PATCH`` (cosmetic). The guiding rule, seen
from both consumers of a model (the edge agent that validates and decodes data with it, and the
integrator that reads that data):

* **MAJOR** when some data that was valid under the old model is invalid under the new one, or
  means something different, or a consumer loses something it could rely on;
* **MINOR** when the new model accepts everything the old one did and more (new affordances,
  wider ranges, relaxed requirements), or changes behaviour without invalidating any data;
* **PATCH** when no value's validity or meaning changes (documentation, labels, reporting).

=================================================  ========  =====================================
change                                             severity  why
=================================================  ========  =====================================
title / description / vendor / extensions          PATCH     documentation; unknown to validation
property, event, service removed (renamed)         MAJOR     users of the old id break
property added, optional                           MINOR     nothing existing changes
property added, required                           MAJOR     existing devices do not report it
property access rw -> r / r -> rw                  MAJOR /   writes now rejected / newly allowed
                                                   MINOR
property required false -> true / true -> false    MAJOR /   reports without it now rejected /
                                                   MINOR     relaxed
schema type changed (int32 -> int64 included)      MAJOR     values change type; nested changes of
                                                             that schema are not listed
minimum raised / maximum lowered / bound added     MAJOR     valid values now rejected
minimum lowered / maximum raised / bound removed   MINOR     range widened
step added, or changed to a non-divisor            MAJOR     values off the new grid are rejected
step removed, or refined to a whole divisor        MINOR     every old value is still on the grid
unit changed or removed / unit added               MAJOR /   values mean something else / newly
                                                   MINOR     documented
unit_name, bool_labels, enum label or description  PATCH     display only; wire values unchanged
max_length / max_items lowered or added            MAJOR     longer values now rejected
max_length / max_items raised or removed           MINOR     limit relaxed
enum member removed / added                        MAJOR /   by wire value
                                                   MINOR
array items schema added / removed                 MAJOR /   items constrained / unconstrained
                                                   MINOR
field removed (struct field, event output,         MAJOR     consumers reading it break
service input or output)
field added: required / optional                   MAJOR /   data without it now rejected /
                                                   MINOR     nothing existing changes
field required false -> true / true -> false       MAJOR /   as for properties
                                                   MINOR
event added / removed                              MINOR /
                                                   MAJOR
event level changed                                MINOR     payloads unchanged, but consumers
                                                             route and alarm by level
service added / removed                            MINOR /
                                                   MAJOR
service call_type changed                          MAJOR     callers wait for replies differently
extends added, removed or to another model         MAJOR     the parent's affordances merge into
                                                             this model's own namespace
extends / component ref: upgrade within the same   MINOR     a compatible version adds, never
compatible version (same major; same 0.minor)                removes; a downgrade or another
                                                             major is MAJOR
component added / removed                          MINOR /   a new namespaced sub-tree / its
                                                   MAJOR     affordances disappear
binding for a protocol added / removed             MINOR /   new way to read / gateways lose data
                                                   MAJOR
point (or Modbus service write, MQTT event route)  MINOR /
added / removed                                    MAJOR
wire mapping of an existing point changed          MAJOR     deployed devices of this type would
(address, table, type, count, scale, offset, byte             be decoded differently
and word order, mask, topic, JSON path, BACnet
object, CoAP resource and format, ...) and
binding-wide defaults (unit id, addressing, orders)
Modbus rounding changed                            MINOR     same meaning, other precision
Modbus valid_min / valid_max narrowed / widened    MAJOR /   good values now flagged bad / relaxed
                                                   MINOR
BACnet write_priority, MQTT command/reply topics   MAJOR     commands land differently
reporting: poll interval, on-change, deadband,     PATCH     when values are sent, never what
heartbeat, groups, COV increment and use_cov,
CoAP observe/poll mode, MQTT qos, read batching
=================================================  ========  =====================================

The diff compares models as written: ``extends`` and components are compared as references.
To compare the effective affordances, diff the resolved (flattened) models as well.

Versions (:func:`declared_bump`) follow Cargo's reading of semantic versioning: the left-most
non-zero component is the compatibility boundary. So ``1.2.3 -> 2.0.0`` allows MAJOR changes,
``-> 1.3.0`` MINOR, ``-> 1.2.4`` PATCH; in ``0.y.z`` (y > 0) a minor bump allows MAJOR changes
and a patch bump allows MINOR ones; in ``0.0.z`` every bump allows MAJOR changes. A prerelease
promises nothing to its successors, so any bump *from* a prerelease allows MAJOR changes; a new
prerelease is judged by its core version. A version that goes backwards is an error, and an
unchanged version allows no change at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from fractions import Fraction
from typing import Any, TypeVar

from thing_models.errors import VersionBumpError
from thing_models.model import (
    INT_RANGES,
    Access,
    BacnetBinding,
    BacnetServiceWrite,
    Bindings,
    CoapBinding,
    Component,
    DataSchema,
    Event,
    Field,
    ModbusBinding,
    ModbusPoint,
    ModelRef,
    MqttBinding,
    Property,
    ReportGroup,
    Reporting,
    SemVer,
    Service,
    ThingModel,
)

__all__ = [
    "Change",
    "ModelDiff",
    "Severity",
    "check_version_bump",
    "declared_bump",
    "diff_models",
]

_T = TypeVar("_T")


class Severity(IntEnum):
    """How big a change is; ordered, so ``max()`` gives the bump a set of changes needs."""

    NONE = 0
    PATCH = 1
    MINOR = 2
    MAJOR = 3

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Severity.NONE: "no",
    Severity.PATCH: "patch (cosmetic)",
    Severity.MINOR: "minor (compatible)",
    Severity.MAJOR: "major (breaking)",
}


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two models: where, how big, a sentence, and both values."""

    severity: Severity
    path: str
    description: str
    old: Any = None
    new: Any = None

    def __str__(self) -> str:
        return f"[{self.severity.name}] {self.path}: {self.description}"


@dataclass(frozen=True, slots=True)
class ModelDiff:
    """The changes from one version of a model to the next."""

    old_version: SemVer
    new_version: SemVer
    changes: tuple[Change, ...]
    name: str = ""

    @property
    def required(self) -> Severity:
        """The bump the changes need: the largest severity among them."""
        return max((c.severity for c in self.changes), default=Severity.NONE)

    @property
    def declared(self) -> Severity:
        """The largest change the version bump allows; raises VersionBumpError on a decrease."""
        return declared_bump(self.old_version, self.new_version)

    @property
    def ok(self) -> bool:
        """True when the version increases (or stays, with no change) enough for the changes."""
        try:
            return self.declared >= self.required
        except VersionBumpError:
            return False

    @property
    def suggested_version(self) -> SemVer:
        """The smallest version after ``old_version`` that allows the required bump."""
        return _next_version(self.old_version, self.required)

    def render(self) -> str:
        """A human report: a header line, then one line per change."""
        title = f"{self.name} " if self.name else ""
        head = f"{title}{self.old_version} -> {self.new_version}: "
        if not self.changes:
            return head + "no changes"
        lines = [head + f"{len(self.changes)} change(s), needs a {self.required.label} bump"]
        lines.extend(f"  {c}" for c in self.changes)
        return "\n".join(lines)


def declared_bump(old: SemVer, new: SemVer) -> Severity:
    """The largest change going from ``old`` to ``new`` allows (see the module docstring)."""
    if new == old:
        return Severity.NONE
    if new < old:
        raise VersionBumpError(f"version went backwards from {old} to {new}")
    if old.prerelease:
        return Severity.MAJOR
    if new.major != old.major:
        return Severity.MAJOR
    if new.minor != old.minor:
        return Severity.MAJOR if old.major == 0 else Severity.MINOR
    if new.patch != old.patch:
        if old.major == 0:
            return Severity.MAJOR if old.minor == 0 else Severity.MINOR
        return Severity.PATCH
    return Severity.MAJOR  # unreachable: a release is never followed by its own prerelease


def _next_version(old: SemVer, needed: Severity) -> SemVer:
    if needed is Severity.NONE:
        return old
    if old.prerelease:
        return SemVer(old.major, old.minor, old.patch)
    if old.major == 0 and old.minor == 0:
        return SemVer(0, 0, old.patch + 1)
    if old.major == 0:
        if needed is Severity.MAJOR:
            return SemVer(0, old.minor + 1, 0)
        return SemVer(0, old.minor, old.patch + 1)
    if needed is Severity.MAJOR:
        return SemVer(old.major + 1, 0, 0)
    if needed is Severity.MINOR:
        return SemVer(old.major, old.minor + 1, 0)
    return SemVer(old.major, old.minor, old.patch + 1)


def check_version_bump(diff: ModelDiff) -> None:
    """Raise VersionBumpError, listing the offending changes, when the bump is too small."""
    title = f"{diff.name}: " if diff.name else ""
    old, new = diff.old_version, diff.new_version
    if new < old:
        raise VersionBumpError(
            f"{title}version went backwards from {old} to {new}; a new version must be higher"
        )
    declared, required = diff.declared, diff.required
    if declared >= required:
        return
    if declared is Severity.NONE:
        head = f"{title}version {old} is unchanged but the model changed"
    else:
        head = f"{title}{old} -> {new} allows {declared.label} changes only"
    offending = [c for c in diff.changes if c.severity > declared]
    lines = [
        f"{head}; the changes below need a {required.label} bump "
        f"(use at least {diff.suggested_version}):"
    ]
    lines.extend(f"  {c}" for c in offending)
    raise VersionBumpError("\n".join(lines))


def diff_models(old: ThingModel, new: ThingModel) -> ModelDiff:
    """Every change from ``old`` to ``new``; both must be versions of the same model."""
    if old.name != new.name:
        raise VersionBumpError(
            f"cannot diff different models {old.name!r} and {new.name!r}: "
            "a diff compares two versions of one model (a rename is a new model)"
        )
    d = _Differ()
    for attr in ("title", "description", "vendor"):
        d.text(attr, attr, getattr(old, attr), getattr(new, attr))
    d.extensions("extensions", old.extensions, new.extensions)
    d.extends(old.extends, new.extends)
    d.components(old.components, new.components)
    d.properties(old.properties, new.properties)
    d.events(old.events, new.events)
    d.services(old.services, new.services)
    d.bindings(old.bindings, new.bindings)
    return ModelDiff(old.version, new.version, tuple(d.changes), name=new.name)


# --------------------------------------------------------------------------- helpers

_WIRE = "deployed devices of this type would be decoded differently"
_REPORTING = "reporting only, when values are sent and not what they are"
_GUARD = "values that were good are now reported with bad quality"
_INF = float("inf")


def _fmt(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, str):
        return repr(str(value))  # str() first: StrEnum members print as their plain value
    return str(value)


def _keyed(items: Iterable[_T], key: Callable[[_T], str]) -> dict[str, _T]:
    """Items by key; a repeated key gets ``#2``, ``#3``... so nothing is silently dropped."""
    out: dict[str, _T] = {}
    seen: dict[str, int] = {}
    for item in items:
        k = key(item)
        seen[k] = seen.get(k, 0) + 1
        out[k if seen[k] == 1 else f"{k}#{seen[k]}"] = item
    return out


def _step_refines(old: int | float, new: int | float) -> bool:
    """True when ``new`` divides ``old`` a whole number of times (exactly, in decimal)."""
    try:
        ratio = Fraction(str(old)) / Fraction(str(new))
    except (ValueError, ZeroDivisionError, OverflowError):
        return False
    return ratio > 0 and ratio.denominator == 1


def _ref_key(version: str) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    """(compatibility boundary, order) of a reference's version; missing parts mean newest."""
    parts = [int(p) for p in version.split(".")]
    if parts[0] > 0 or len(parts) == 1:
        compat: tuple[int, ...] = (parts[0],)
    elif parts[1] > 0 or len(parts) == 2:
        compat = (0, parts[1])
    else:
        compat = (0, 0, parts[2])
    padded = [float(p) for p in parts] + [_INF] * (3 - len(parts))
    return compat, (padded[0], padded[1], padded[2])


class _Differ:
    """Collects changes while walking two models in step."""

    def __init__(self) -> None:
        self.changes: list[Change] = []

    def add(self, severity: Severity, path: str, what: str, why: str, old: Any, new: Any) -> None:
        kind = {Severity.MAJOR: "breaking", Severity.MINOR: "compatible"}.get(severity, "cosmetic")
        text = f"{what} ({kind}: {why})" if why else f"{what} ({kind})"
        self.changes.append(Change(severity, path, text, old, new))

    def match(
        self,
        template: str,
        old: Iterable[_T],
        new: Iterable[_T],
        key: Callable[[_T], str],
        removed: Callable[[str, _T], None],
        added: Callable[[str, _T], None],
        both: Callable[[str, _T, _T], None],
    ) -> None:
        """Pair items by key; call ``removed``, ``both`` or ``added`` on the filled ``template``."""
        old_map, new_map = _keyed(old, key), _keyed(new, key)
        for k, item in old_map.items():
            other = new_map.get(k)
            if other is None:
                removed(template.format(k), item)
            else:
                both(template.format(k), item, other)
        for k, item in new_map.items():
            if k not in old_map:
                added(template.format(k), item)

    # ----------------------------------------------------------------- generic

    def text(self, path: str, name: str, old: str | None, new: str | None) -> None:
        if old != new:
            self.add(
                Severity.PATCH,
                path,
                f"{name} changed from {_fmt(old)} to {_fmt(new)}",
                "",
                old,
                new,
            )

    def extensions(self, path: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        for key in sorted({*old, *new}, key=str):
            o, n = old.get(key), new.get(key)
            if o != n or (key in old) != (key in new):
                self.add(
                    Severity.PATCH,
                    f"{path}.{key}",
                    f"extension {key!r} changed from {_fmt(o)} to {_fmt(n)}",
                    "not interpreted by validation",
                    o,
                    n,
                )

    def by_policy(
        self, path: str, old: Any, new: Any, policy: Mapping[str, tuple[Severity, str]]
    ) -> None:
        """Compare two dataclasses field by field; ``policy`` gives each field's severity.

        ``Severity.NONE`` marks a field compared elsewhere; a field missing from the policy (one
        added to the model later) is taken as breaking until it is classified.
        """
        for f in dataclasses.fields(old):
            o, n = getattr(old, f.name), getattr(new, f.name)
            if o != n:
                severity, why = policy.get(f.name, (Severity.MAJOR, "not yet classified"))
                if severity is not Severity.NONE:
                    what = f"{f.name} changed from {_fmt(o)} to {_fmt(n)}"
                    self.add(severity, f"{path}.{f.name}", what, why, o, n)

    def limit(self, path: str, name: str, old: float | None, new: float | None, what: str) -> None:
        """An upper limit such as max_length or max_items; None means unlimited."""
        if old == new:
            return
        o = _INF if old is None else old
        n = _INF if new is None else new
        if n < o:
            why = f"{what} that were valid are now rejected"
            self.add(
                Severity.MAJOR,
                path,
                f"{name} narrowed from {_fmt(old)} to {_fmt(new)}",
                why,
                old,
                new,
            )
        elif n > o:
            why = f"{what} are accepted in a wider range"
            self.add(
                Severity.MINOR,
                path,
                f"{name} widened from {_fmt(old)} to {_fmt(new)}",
                why,
                old,
                new,
            )
        else:
            self.add(
                Severity.PATCH,
                path,
                f"{name} restated from {_fmt(old)} to {_fmt(new)}",
                "same range",
                old,
                new,
            )

    def bounds(
        self,
        path: str,
        old: tuple[float | None, float | None],
        new: tuple[float | None, float | None],
        implicit: tuple[float, float],
    ) -> None:
        """A (minimum, maximum) pair; an unset bound is ``implicit`` (the type's own range)."""
        lo_old, lo_new = old[0], new[0]
        if lo_old != lo_new:
            o = implicit[0] if lo_old is None else lo_old
            n = implicit[0] if lo_new is None else lo_new
            self.range_change(f"{path}.minimum", "minimum", lo_old, lo_new, n > o, n < o)
        hi_old, hi_new = old[1], new[1]
        if hi_old != hi_new:
            o = implicit[1] if hi_old is None else hi_old
            n = implicit[1] if hi_new is None else hi_new
            self.range_change(f"{path}.maximum", "maximum", hi_old, hi_new, n < o, n > o)

    def range_change(
        self,
        path: str,
        name: str,
        old: Any,
        new: Any,
        narrowed: bool,
        widened: bool,
        why: str = "values that were valid are now rejected",
    ) -> None:
        """A bound that moved: narrowed MAJOR, widened MINOR, restated (same range) PATCH."""
        span = f"from {_fmt(old)} to {_fmt(new)}"
        if narrowed:
            self.add(Severity.MAJOR, path, f"{name} narrowed {span}", why, old, new)
        elif widened:
            self.add(Severity.MINOR, path, f"{name} widened {span}", "range widened", old, new)
        else:
            self.add(Severity.PATCH, path, f"{name} restated {span}", "same range", old, new)

    # ----------------------------------------------------------------- schemas

    def schema(self, path: str, old: DataSchema, new: DataSchema) -> None:
        if old == new:
            return
        if old.type != new.type:
            why = "values of the old type are rejected or mean something else"
            what = f"type changed from {old.type} to {new.type}"
            self.add(Severity.MAJOR, f"{path}.type", what, why, old.type, new.type)
            return
        implicit: tuple[float, float] = (-_INF, _INF)
        if old.type in INT_RANGES:
            low, high = INT_RANGES[old.type]
            implicit = (low, high)
        self.bounds(path, (old.minimum, old.maximum), (new.minimum, new.maximum), implicit)
        self.step(f"{path}.step", old.step, new.step)
        self.unit(f"{path}.unit", old.unit, new.unit)
        self.text(f"{path}.unit_name", "unit_name", old.unit_name, new.unit_name)
        self.limit(f"{path}.max_length", "max_length", old.max_length, new.max_length, "texts")
        self.enum(f"{path}.enum", old, new)
        if old.bool_labels != new.bool_labels:
            what = f"bool_labels changed from {_fmt(old.bool_labels)} to {_fmt(new.bool_labels)}"
            self.add(
                Severity.PATCH, f"{path}.bool_labels", what, "", old.bool_labels, new.bool_labels
            )
        self.fields(f"{path}.fields", old.fields, new.fields, "struct field")
        self.items(f"{path}.items", old.items, new.items)
        self.limit(f"{path}.max_items", "max_items", old.max_items, new.max_items, "arrays")

    def step(self, path: str, old: float | None, new: float | None) -> None:
        if old == new:
            return
        if new is None:
            self.add(
                Severity.MINOR,
                path,
                f"step {_fmt(old)} removed",
                "any value in range is accepted",
                old,
                new,
            )
        elif old is None:
            why = "values off the step grid are now rejected"
            self.add(Severity.MAJOR, path, f"step {_fmt(new)} added", why, old, new)
        elif _step_refines(old, new):
            why = "every value on the old grid is on the new one"
            self.add(Severity.MINOR, path, f"step refined from {old} to {new}", why, old, new)
        else:
            why = "values on the old grid are rejected by the new one"
            self.add(Severity.MAJOR, path, f"step changed from {old} to {new}", why, old, new)

    def unit(self, path: str, old: str | None, new: str | None) -> None:
        if old == new:
            return
        if old is None:
            self.add(
                Severity.MINOR,
                path,
                f"unit {_fmt(new)} added",
                "the values are now documented",
                old,
                new,
            )
        elif new is None:
            why = "consumers lose what the values mean"
            self.add(Severity.MAJOR, path, f"unit {_fmt(old)} removed", why, old, new)
        else:
            why = "the same number now means something else"
            self.add(Severity.MAJOR, path, f"unit changed from {old!r} to {new!r}", why, old, new)

    def enum(self, path: str, old: DataSchema, new: DataSchema) -> None:
        def removed(p: str, member: Any) -> None:
            why = "reports with that value are now rejected"
            self.add(Severity.MAJOR, p, f"enum member {member.value!r} removed", why, member, None)

        def added(p: str, member: Any) -> None:
            why = "a new accepted value"
            self.add(Severity.MINOR, p, f"enum member {member.value!r} added", why, None, member)

        def both(p: str, o: Any, n: Any) -> None:
            self.text(f"{p}.label", "label", o.label, n.label)
            self.text(f"{p}.description", "description", o.description, n.description)

        self.match(
            f"{path}[{{}}]", old.enum, new.enum, lambda m: repr(m.value), removed, added, both
        )

    def items(self, path: str, old: DataSchema | None, new: DataSchema | None) -> None:
        if old is None and new is None:
            return
        if old is None:
            why = "items that were unconstrained may now be rejected"
            self.add(Severity.MAJOR, path, "array item schema added", why, old, new)
        elif new is None:
            self.add(
                Severity.MINOR,
                path,
                "array item schema removed",
                "items are unconstrained",
                old,
                new,
            )
        else:
            self.schema(path, old, new)

    def fields(self, path: str, old: Iterable[Field], new: Iterable[Field], noun: str) -> None:
        """Struct fields, event outputs and service parameters: one rule for all of them."""

        def removed(p: str, f: Field) -> None:
            why = "data that carried it is rejected and consumers that read it break"
            self.add(Severity.MAJOR, p, f"{noun} {f.id!r} removed", why, f, None)

        def added(p: str, f: Field) -> None:
            if f.required:
                why = "data without it, valid before, is now rejected"
                self.add(Severity.MAJOR, p, f"required {noun} {f.id!r} added", why, None, f)
            else:
                self.add(
                    Severity.MINOR,
                    p,
                    f"optional {noun} {f.id!r} added",
                    "nothing existing changes",
                    None,
                    f,
                )

        def both(p: str, o: Field, n: Field) -> None:
            self.text(f"{p}.title", "title", o.title, n.title)
            self.text(f"{p}.description", "description", o.description, n.description)
            self.required(f"{p}.required", o.required, n.required, "data without it")
            self.schema(f"{p}.schema", o.schema, n.schema)

        self.match(f"{path}.{{}}", old, new, lambda f: f.id, removed, added, both)

    def required(self, path: str, old: bool, new: bool, subject: str) -> None:
        if old == new:
            return
        if new:
            why = f"{subject}, valid before, is now rejected"
            self.add(Severity.MAJOR, path, "made required", why, old, new)
        else:
            self.add(Severity.MINOR, path, "made optional", "requirement relaxed", old, new)

    # ----------------------------------------------------------------- affordances

    def properties(self, old: Iterable[Property], new: Iterable[Property]) -> None:
        def removed(p: str, prop: Property) -> None:
            why = "devices and consumers that use it break"
            self.add(Severity.MAJOR, p, f"property {prop.id!r} removed", why, prop, None)

        def added(p: str, prop: Property) -> None:
            if prop.required:
                why = "existing devices do not report it"
                self.add(Severity.MAJOR, p, f"required property {prop.id!r} added", why, None, prop)
            else:
                self.add(
                    Severity.MINOR,
                    p,
                    f"property {prop.id!r} added",
                    "a new optional property",
                    None,
                    prop,
                )

        def both(p: str, o: Property, n: Property) -> None:
            self.text(f"{p}.title", "title", o.title, n.title)
            self.text(f"{p}.description", "description", o.description, n.description)
            self.extensions(f"{p}.extensions", o.extensions, n.extensions)
            if o.access != n.access:
                what = f"access changed from {o.access} to {n.access}"
                if n.access is Access.READ:
                    why = "writes that were accepted are now rejected"
                    self.add(Severity.MAJOR, f"{p}.access", what, why, o.access, n.access)
                else:
                    self.add(
                        Severity.MINOR,
                        f"{p}.access",
                        what,
                        "it can now be written",
                        o.access,
                        n.access,
                    )
            self.required(
                f"{p}.required", o.required, n.required, "a device that does not report it"
            )
            self.schema(f"{p}.schema", o.schema, n.schema)

        self.match("properties.{}", old, new, lambda p: p.id, removed, added, both)

    def events(self, old: Iterable[Event], new: Iterable[Event]) -> None:
        def removed(p: str, event: Event) -> None:
            why = "consumers that subscribe to it break"
            self.add(Severity.MAJOR, p, f"event {event.id!r} removed", why, event, None)

        def added(p: str, event: Event) -> None:
            self.add(Severity.MINOR, p, f"event {event.id!r} added", "a new event", None, event)

        def both(p: str, o: Event, n: Event) -> None:
            self.text(f"{p}.title", "title", o.title, n.title)
            self.text(f"{p}.description", "description", o.description, n.description)
            self.extensions(f"{p}.extensions", o.extensions, n.extensions)
            if o.level != n.level:
                why = "payloads are unchanged but consumers route and alarm by level"
                what = f"level changed from {o.level} to {n.level}"
                self.add(Severity.MINOR, f"{p}.level", what, why, o.level, n.level)
            self.fields(f"{p}.outputs", o.outputs, n.outputs, "output")

        self.match("events.{}", old, new, lambda e: e.id, removed, added, both)

    def services(self, old: Iterable[Service], new: Iterable[Service]) -> None:
        def removed(p: str, service: Service) -> None:
            why = "callers of it break"
            self.add(Severity.MAJOR, p, f"service {service.id!r} removed", why, service, None)

        def added(p: str, service: Service) -> None:
            self.add(
                Severity.MINOR, p, f"service {service.id!r} added", "a new service", None, service
            )

        def both(p: str, o: Service, n: Service) -> None:
            self.text(f"{p}.title", "title", o.title, n.title)
            self.text(f"{p}.description", "description", o.description, n.description)
            self.extensions(f"{p}.extensions", o.extensions, n.extensions)
            if o.call_type != n.call_type:
                why = "callers wait for the reply differently"
                what = f"call_type changed from {o.call_type} to {n.call_type}"
                self.add(Severity.MAJOR, f"{p}.call_type", what, why, o.call_type, n.call_type)
            self.fields(f"{p}.inputs", o.inputs, n.inputs, "input")
            self.fields(f"{p}.outputs", o.outputs, n.outputs, "output")

        self.match("services.{}", old, new, lambda s: s.id, removed, added, both)

    # ----------------------------------------------------------------- composition

    def extends(self, old: ModelRef | None, new: ModelRef | None) -> None:
        if old == new:
            return
        if old is None:
            why = "the parent's affordances merge into this model's own and may redefine them"
            self.add(Severity.MAJOR, "extends", f"now extends {new}", why, old, new)
        elif new is None:
            why = "the inherited affordances disappear"
            self.add(Severity.MAJOR, "extends", f"no longer extends {old}", why, old, new)
        else:
            self.ref("extends", old, new)

    def ref(self, path: str, old: ModelRef, new: ModelRef) -> None:
        if old == new:
            return
        what = f"reference changed from {old} to {new}"
        if old.name != new.name:
            self.add(Severity.MAJOR, path, what, "it now refers to another model", old, new)
            return
        try:
            if not old.version or not new.version or "-" in old.version + new.version:
                raise ValueError("unconstrained or prerelease")
            (old_compat, old_order), (new_compat, new_order) = (
                _ref_key(old.version),
                _ref_key(new.version),
            )
        except ValueError:
            why = "no compatibility is promised across these versions"
            self.add(Severity.MAJOR, path, what, why, old, new)
            return
        if old_compat != new_compat:
            self.add(Severity.MAJOR, path, what, "another major version", old, new)
        elif new_order < old_order:
            why = "a downgrade loses what was added since"
            self.add(Severity.MAJOR, path, what, why, old, new)
        else:
            self.add(Severity.MINOR, path, what, "an upgrade within compatible versions", old, new)

    def components(self, old: Iterable[Component], new: Iterable[Component]) -> None:
        def removed(p: str, c: Component) -> None:
            why = "its affordances disappear"
            self.add(Severity.MAJOR, p, f"component {c.instance!r} removed", why, c, None)

        def added(p: str, c: Component) -> None:
            why = "a new sub-model under its own name"
            self.add(Severity.MINOR, p, f"component {c.instance!r} ({c.model}) added", why, None, c)

        def both(p: str, o: Component, n: Component) -> None:
            self.text(f"{p}.title", "title", o.title, n.title)
            self.text(f"{p}.description", "description", o.description, n.description)
            self.ref(f"{p}.model", o.model, n.model)

        self.match("components.{}", old, new, lambda c: c.instance, removed, added, both)

    # ----------------------------------------------------------------- bindings

    def bindings(self, old: Bindings, new: Bindings) -> None:
        pairs: tuple[tuple[str, Any, Any], ...] = (
            ("modbus", old.modbus, new.modbus),
            ("bacnet", old.bacnet, new.bacnet),
            ("mqtt", old.mqtt, new.mqtt),
            ("coap", old.coap, new.coap),
        )
        for proto, o, n in pairs:
            path = f"bindings.{proto}"
            if o == n:
                continue
            if o is None:
                why = f"the device type can now also be read over {proto}"
                self.add(Severity.MINOR, path, f"{proto} binding added", why, o, n)
            elif n is None:
                why = f"gateways that read these devices over {proto} lose every value"
                self.add(Severity.MAJOR, path, f"{proto} binding removed", why, o, n)
            elif isinstance(o, ModbusBinding):
                self.modbus(path, o, n)
            elif isinstance(o, BacnetBinding):
                self.bacnet(path, o, n)
            elif isinstance(o, MqttBinding):
                self.mqtt(path, o, n)
            elif isinstance(o, CoapBinding):
                self.points(f"{path}.points", o.points, n.points, _COAP_POINT)
                self.points(
                    f"{path}.services", o.services, n.services, _COAP_SERVICE, "service", "request"
                )
        self.reporting("bindings.reporting", old.reporting, new.reporting)

    def points(
        self,
        path: str,
        old: Iterable[Any],
        new: Iterable[Any],
        policy: Mapping[str, tuple[Severity, str]],
        key: str = "property",
        noun: str = "point",
    ) -> None:
        """Points (or writes, routes) keyed by the affordance they serve, compared by policy."""

        def removed(p: str, point: Any) -> None:
            what = f"{noun} for {getattr(point, key)!r} removed"
            self.add(
                Severity.MAJOR,
                p,
                what,
                "gateways can no longer map it over this protocol",
                point,
                None,
            )

        def added(p: str, point: Any) -> None:
            what = f"{noun} for {getattr(point, key)!r} added"
            self.add(Severity.MINOR, p, what, "a new mapping", None, point)

        def both(p: str, o: Any, n: Any) -> None:
            self.by_policy(p, o, n, policy)
            if isinstance(o, ModbusPoint):
                self.bounds_guard(p, o, n)

        self.match(f"{path}[{{}}]", old, new, lambda i: str(getattr(i, key)), removed, added, both)

    def bounds_guard(self, path: str, old: ModbusPoint, new: ModbusPoint) -> None:
        """Quality guards: a value outside them is reported with bad quality."""
        if old.valid_min != new.valid_min:
            o = -_INF if old.valid_min is None else old.valid_min
            n = -_INF if new.valid_min is None else new.valid_min
            self.range_change(
                f"{path}.valid_min", "valid_min", old.valid_min, new.valid_min, n > o, n < o, _GUARD
            )
        if old.valid_max != new.valid_max:
            o = _INF if old.valid_max is None else old.valid_max
            n = _INF if new.valid_max is None else new.valid_max
            self.range_change(
                f"{path}.valid_max", "valid_max", old.valid_max, new.valid_max, n < o, n > o, _GUARD
            )

    def modbus(self, path: str, old: ModbusBinding, new: ModbusBinding) -> None:
        self.by_policy(path, old, new, _MODBUS_BINDING)
        self.points(f"{path}.points", old.points, new.points, _MODBUS_POINT)
        self.points(
            f"{path}.services", old.services, new.services, _MODBUS_WRITE, "service", "write"
        )

    def bacnet(self, path: str, old: BacnetBinding, new: BacnetBinding) -> None:
        self.by_policy(path, old, new, _BACNET_BINDING)
        self.points(f"{path}.points", old.points, new.points, _BACNET_POINT)
        self.write_sequences(f"{path}.services", old.services, new.services)

    def write_sequences(
        self, path: str, old: Iterable[BacnetServiceWrite], new: Iterable[BacnetServiceWrite]
    ) -> None:
        """A service's writes are an ordered sequence: compared per service, as a whole."""

        def by_service(writes: Iterable[BacnetServiceWrite]) -> dict[str, tuple[Any, ...]]:
            out: dict[str, tuple[Any, ...]] = {}
            for write in writes:
                out[write.service] = (*out.get(write.service, ()), write)
            return out

        before, after = by_service(old), by_service(new)
        for service in sorted(before.keys() | after.keys()):
            o, n = before.get(service), after.get(service)
            p = f"{path}[{service}]"
            if o == n:
                continue
            if n is None:
                why = "gateways can no longer carry out the service over BACnet"
                self.add(Severity.MAJOR, p, f"writes of service {service!r} removed", why, o, n)
            elif o is None:
                self.add(
                    Severity.MINOR, p, f"writes of service {service!r} added", "a new mapping", o, n
                )
            else:
                why = "the device would receive different writes"
                self.add(Severity.MAJOR, p, f"writes of service {service!r} changed", why, o, n)

    def mqtt(self, path: str, old: MqttBinding, new: MqttBinding) -> None:
        self.by_policy(path, old, new, _MQTT_BINDING)
        self.points(f"{path}.points", old.points, new.points, _MQTT_POINT)
        self.points(f"{path}.events", old.events, new.events, _MQTT_ROUTE, "event", "route")

    def reporting(self, path: str, old: Reporting, new: Reporting) -> None:
        if old.default != new.default:
            self.by_policy(f"{path}.default", old.default, new.default, _REPORT_POLICY)

        def removed(p: str, g: ReportGroup) -> None:
            self.add(Severity.PATCH, p, f"report group {g.name!r} removed", _REPORTING, g, None)

        def added(p: str, g: ReportGroup) -> None:
            self.add(Severity.PATCH, p, f"report group {g.name!r} added", _REPORTING, None, g)

        def both(p: str, o: ReportGroup, n: ReportGroup) -> None:
            self.by_policy(f"{p}.policy", o.policy, n.policy, _REPORT_POLICY)

        self.match(
            f"{path}.groups.{{}}", old.groups, new.groups, lambda g: g.name, removed, added, both
        )


def _policy(
    major: Iterable[str] = (),
    minor: Iterable[str] = (),
    patch: Iterable[str] = (),
    elsewhere: Iterable[str] = (),
    *,
    why_major: str = _WIRE,
    why_minor: str = "",
    why_patch: str = _REPORTING,
) -> Mapping[str, tuple[Severity, str]]:
    table = dict.fromkeys(major, (Severity.MAJOR, why_major))
    table.update(dict.fromkeys(minor, (Severity.MINOR, why_minor)))
    table.update(dict.fromkeys(patch, (Severity.PATCH, why_patch)))
    table.update(dict.fromkeys(elsewhere, (Severity.NONE, "")))
    return table


# Field-by-field rules of the binding dataclasses; ``elsewhere``: keys, nested collections and
# fields with their own comparison. Every field of each dataclass is listed (a test checks).
_REPORT_FIELDS = ("group", "report")
_MODBUS_POINT = _policy(
    major=(
        "table", "address", "type", "count", "unit_id", "byte_order", "word_order", "bit",
        "scale", "offset", "mask", "shift", "enum_map", "sentinel", "read_function",
        "write_function", "encoding",
    ),
    minor=("rounding",),
    patch=_REPORT_FIELDS,
    elsewhere=("property", "valid_min", "valid_max"),
    why_minor="same meaning, other precision",
)  # fmt: skip
_MODBUS_WRITE = _policy(
    major=("table", "address", "type", "value", "param", "write_function"),
    elsewhere=("service",),
    why_major="the device would receive a different write",
)
_MODBUS_BINDING = _policy(
    major=("unit_id", "zero_based", "byte_order", "word_order"),
    patch=("max_registers_per_read", "max_coils_per_read", "max_gap"),
    elsewhere=("points", "services"),
    why_patch="read batching only, the same values are read",
)
_BACNET_POINT = _policy(
    major=("object_type", "instance", "property_id", "array_index", "write_priority"),
    patch=(*_REPORT_FIELDS, "cov_increment"),
    elsewhere=("property",),
)
_BACNET_BINDING = _policy(
    major=("device_instance",), patch=("use_cov",), elsewhere=("points", "services")
)
_MQTT_POINT = _policy(major=("topic", "path"), patch=_REPORT_FIELDS, elsewhere=("property",))
_MQTT_ROUTE = _policy(major=("topic", "path"), elsewhere=("event",))
_MQTT_BINDING = _policy(
    major=("command_topic", "reply_topic"),
    patch=("qos",),
    elsewhere=("points", "events"),
    why_major="commands and replies travel on other topics",
    why_patch="delivery guarantee only",
)
_COAP_POINT = _policy(
    major=("resource", "path", "content_format"),
    patch=(*_REPORT_FIELDS, "mode"),
    elsewhere=("property",),
)
_COAP_SERVICE = _policy(
    major=("resource", "method", "content_format"),
    elsewhere=("service",),
    why_major="the device would receive a different request",
)
_COAP_BINDING = _policy(elsewhere=("points", "services"))
_REPORT_POLICY = _policy(
    patch=("poll_interval_s", "on_change", "deadband", "deadband_mode", "heartbeat_s")
)
