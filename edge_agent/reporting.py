"""Report by exception: which readings become property reports, and what those reports say.

Pure logic, no I/O, no clock: every call is given the acquisition time ``ts_ms`` (milliseconds
since the Unix epoch, taken when the value was read, not when it is sent).

* :func:`resolve_policy` picks a point's :class:`~thing_models.model.ReportPolicy`: the point's
  own ``report``, else its ``group``'s policy, else the binding's ``default``.
* :class:`ReportFilter` decides, per (device, property), whether a reading is reported: the
  first one always; with ``on_change`` only when the value moved by more than the deadband, the
  quality or the type changed, the fault reason changed, or the heartbeat is due.
* :class:`ReportBuilder` checks readings with the compiled model validator and turns them into
  one canonical ``property_report`` per (device, acquisition time) plus diagnostic events.

A value is never dropped silently. A value the model rejects is reported as JSON ``null`` with
``param_quality`` ``bad``, and a diagnostic event (:data:`DIAGNOSTIC_EVENT`) says why. A
reading the codec marked bad (``Decoded(None, BAD, reason)``) is reported the same way. Every
reported reading whose final quality is not ``good`` comes with one diagnostic event.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from protocol_adapters.base import Reading
from thing_models.errors import MessageError
from thing_models.messages import JsonValue, Message, Quality, normalize_value
from thing_models.model import DeadbandMode, ModelRef, Reporting, ReportPolicy
from thing_models.telemetry import Issue, ModelValidator

__all__ = [
    "DIAGNOSTIC_EVENT",
    "MAX_DIAGNOSTIC_TEXT",
    "Diagnostic",
    "Reading",
    "ReportBuilder",
    "ReportFilter",
    "policies_for_points",
    "resolve_policy",
    "worst_quality",
]

#: The reserved event name of diagnostic events. A leading underscore keeps it apart from
#: model-declared events by convention; a model that declares it is refused by ReportBuilder.
#: Params: ``property`` (the property id), ``source`` (``validator``, ``codec`` or
#: ``message``), ``code`` (an Issue code, or ``codec``), ``path``, ``message`` (why) and
#: ``quality`` (the quality the value was reported with).
DIAGNOSTIC_EVENT: Final = "_diagnostic"
#: Longest diagnostic ``message`` text; longer texts are cut and end with an ellipsis.
MAX_DIAGNOSTIC_TEXT: Final = 512

_QUALITY_RANK: Final = {Quality.GOOD: 0, Quality.UNCERTAIN: 1, Quality.BAD: 2}


def worst_quality(qualities: Iterable[Quality]) -> Quality:
    """The least trustworthy of ``qualities`` (bad > uncertain > good); good when empty."""
    worst = Quality.GOOD
    for quality in qualities:
        if _QUALITY_RANK[quality] > _QUALITY_RANK[worst]:
            worst = quality
    return worst


# --------------------------------------------------------------------------- policies


def resolve_policy(
    point_report: ReportPolicy | None, point_group: str | None, reporting: Reporting
) -> ReportPolicy:
    """The policy of a point: its own ``report``, else its group's, else ``reporting.default``.

    Raises ValueError when ``point_group`` names no group (the model loader refuses such models,
    so this is a programming error, not something to paper over with the default).
    """
    if point_report is not None:
        return point_report
    if point_group is not None:
        group = reporting.group(point_group)
        if group is None:
            raise ValueError(f"point group {point_group!r} is not defined in reporting.groups")
        return group.policy
    return reporting.default


class _Point(Protocol):
    @builtins.property
    def property(self) -> str: ...

    @builtins.property
    def group(self) -> str | None: ...

    @builtins.property
    def report(self) -> ReportPolicy | None: ...


def policies_for_points(points: Iterable[_Point], reporting: Reporting) -> dict[str, ReportPolicy]:
    """``{property: policy}`` for binding points (Modbus, BACnet, MQTT: anything with
    ``property``, ``group`` and ``report``). A property bound twice keeps its first point's."""
    out: dict[str, ReportPolicy] = {}
    for point in points:
        out.setdefault(point.property, resolve_policy(point.report, point.group, reporting))
    return out


# --------------------------------------------------------------------------- the filter


def _is_number(value: object) -> bool:
    return type(value) is int or type(value) is float


def _same(a: Any, b: Any) -> bool:
    """Equal with the same JSON type (``1`` is not ``1.0`` nor ``True``); NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a) and math.isnan(b):
            return True
        return bool(a == b) and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    try:
        return bool(a == b)
    except Exception:  # a hostile __eq__: treat as changed
        return False


def _moved(value: int | float, last: int | float, policy: ReportPolicy) -> bool:
    """Did a number move by more than the deadband since the last reported one?"""
    if type(value) is float and not math.isfinite(value):
        return not _same(value, last)
    if type(last) is float and not math.isfinite(last):
        return True
    change = abs(value - last)
    if policy.deadband_mode == DeadbandMode.PERCENT:
        if last == 0:
            return change != 0  # no base for a percentage: any change
        threshold: float = abs(last) * policy.deadband / 100.0
    else:
        threshold = policy.deadband
    if threshold <= 0:
        return change != 0
    if type(value) is int and type(last) is int:
        return change > threshold  # exact
    # Float rounding: 20.1 - 20.0 is 0.10000000000000142; a change within a few ulps of the
    # deadband counts as "exactly at the deadband" and is not reported.
    tolerance = 4 * math.ulp(max(abs(value), abs(last), threshold))
    return change > threshold + tolerance


@dataclass(slots=True)
class _Last:
    value: Any
    quality: Quality
    reason: str
    ts_ms: int


class ReportFilter:
    """Report by exception, per (device, property); compares with the last REPORTED reading
    (so slow drift is reported once it adds up to more than the deadband).

    :meth:`offer` reports a reading (returns True and remembers it) when:

    * it is the first of its (device, property);
    * the policy's ``on_change`` is False (every reading is reported);
    * its quality differs from the last reported one (never suppressed);
    * its fault ``reason`` differs (a new diagnostic is never suppressed);
    * the JSON type changed, or a non-number (text, bool, enum, struct, array, null) changed;
    * a number moved by more than ``deadband``: absolute units, or percent of the last reported
      value (a last value of 0 gives no base: any change is reported). Exactly at the deadband
      is not reported. Deadband 0: any change;
    * ``heartbeat_s`` has elapsed since the last report (``>=``);
    * ``ts_ms`` is earlier than the last report's (the clock stepped back: report and start over
      rather than stay silent until the clock catches up).
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], _Last] = {}

    def offer(
        self,
        device_id: str,
        prop: str,
        value: Any,
        quality: Quality,
        ts_ms: int,
        policy: ReportPolicy,
        *,
        reason: str = "",
    ) -> bool:
        """Whether this reading is reported; when it is, it becomes the new baseline."""
        if not policy.on_change and policy.heartbeat_s is None:
            return True  # every reading is reported: nothing to remember
        key = (device_id, prop)
        last = self._last.get(key)
        if last is None or self._should_report(last, value, quality, reason, ts_ms, policy):
            self._last[key] = _Last(value, quality, reason, ts_ms)
            return True
        return False

    @staticmethod
    def _should_report(
        last: _Last, value: Any, quality: Quality, reason: str, ts_ms: int, policy: ReportPolicy
    ) -> bool:
        if not policy.on_change:
            return True
        if quality != last.quality or reason != last.reason:
            return True
        if ts_ms < last.ts_ms:
            return True
        if policy.heartbeat_s is not None and ts_ms - last.ts_ms >= policy.heartbeat_s * 1000:
            return True
        if _is_number(value) and _is_number(last.value):
            if type(value) is not type(last.value):
                return True
            return _moved(value, last.value, policy)
        return not _same(value, last.value)

    def forget(self, device_id: str, prop: str | None = None) -> None:
        """Drop the state of one property of a device, or of the whole device (``prop`` None):
        its next reading is reported as a first one (e.g. after a reconnect)."""
        if prop is not None:
            self._last.pop((device_id, prop), None)
            return
        for key in [k for k in self._last if k[0] == device_id]:
            del self._last[key]

    def __len__(self) -> int:
        return len(self._last)


# --------------------------------------------------------------------------- the builder


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """Why one reading was reported with a quality other than good."""

    property: str
    source: str  # "validator", "codec" or "message"
    code: str
    path: str
    message: str
    quality: Quality

    def params(self) -> dict[str, JsonValue]:
        return {
            "property": _cut(self.property),
            "source": self.source,
            "code": self.code,
            "path": self.path,
            "message": self.message,
            "quality": self.quality.value,
        }


def _cut(text: str) -> str:
    text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    if len(text) <= MAX_DIAGNOSTIC_TEXT:
        return text
    return text[: MAX_DIAGNOSTIC_TEXT - 1] + "…"


@dataclass(frozen=True, slots=True)
class _Checked:
    value: JsonValue
    quality: Quality
    diagnostic: Diagnostic | None
    in_report: bool  # False: not a model property; only the diagnostic is sent


class ReportBuilder:
    """Turns one acquisition of a device's readings into canonical messages.

    :meth:`build` returns the ``property_report`` (if any parameter is reported) followed by
    one :data:`DIAGNOSTIC_EVENT` event per reported reading whose quality is not good. With a
    :class:`ReportFilter` only readings it accepts are reported; their diagnostics go with them
    (a persisting fault is re-sent on each heartbeat and whenever its reason changes, not on
    every poll). Readings of properties the model does not declare are never reported as
    parameters; each produces a diagnostic (code ``unknown``), unfiltered.
    """

    __slots__ = ("_model", "_validator")

    def __init__(self, model_ref: ModelRef | str, validator: ModelValidator) -> None:
        ref = model_ref if isinstance(model_ref, ModelRef) else ModelRef.parse(model_ref)
        if not ref.version:
            raise ValueError(f"model reference {str(ref)!r} needs an exact version")
        if validator.model.event(DIAGNOSTIC_EVENT) is not None:
            raise ValueError(
                f"model {validator.model.name} declares event {DIAGNOSTIC_EVENT!r}, "
                "which is reserved for edge diagnostics"
            )
        self._model = str(ref)
        self._validator = validator

    def _check(self, prop: str, reading: tuple[Any, Quality, str]) -> _Checked:
        value, quality, reason = reading
        quality = Quality(quality)
        if value is None and quality != Quality.GOOD:
            return _Checked(
                None, quality, Diagnostic(prop, "codec", "codec", prop, _cut(reason), quality), True
            )
        issue: Issue | None = self._validator.check_value(prop, value)
        if issue is not None:
            diag = Diagnostic(
                prop, "validator", issue.code, issue.path, _cut(issue.message), Quality.BAD
            )
            return _Checked(None, Quality.BAD, diag, issue.code != "unknown")
        try:
            json_value: JsonValue = normalize_value(value, prop)
        except MessageError as exc:  # valid for the model but not for the envelope
            diag = Diagnostic(prop, "message", "encoding", prop, _cut(str(exc)), Quality.BAD)
            return _Checked(None, Quality.BAD, diag, True)
        if quality == Quality.GOOD:
            return _Checked(json_value, quality, None, True)
        return _Checked(
            json_value,
            quality,
            Diagnostic(prop, "codec", "codec", prop, _cut(reason), quality),
            True,
        )

    def build(
        self,
        device_id: str,
        ts_ms: int,
        readings: Mapping[str, tuple[Any, Quality, str]],
        *,
        report_filter: ReportFilter | None = None,
        policy_for: Callable[[str], ReportPolicy] | Mapping[str, ReportPolicy] | None = None,
    ) -> list[Message]:
        """Messages for ``readings`` (``{property: (value, quality, reason)}``, e.g. ``Decoded``)
        acquired at ``ts_ms``. ``policy_for`` gives each property's policy for
        ``report_filter`` (missing: report every reading)."""
        params: dict[str, JsonValue] = {}
        param_quality: dict[str, Quality] = {}
        diagnostics: list[Diagnostic] = []
        fast = self._validator.fast_check
        good = Quality.GOOD
        for prop, reading in readings.items():
            # The common case inline: a good plain value the model accepts, offered to the
            # filter as it is (``_check`` gives the same result the long way).
            value, quality, _ = reading
            if quality is good and type(value) in _PLAIN:
                check = fast.get(prop)
                if (
                    check is not None
                    and check(value)
                    and (type(value) is not float or value - value == 0.0)
                    and (type(value) is not int or _INT64_MIN <= value <= _INT64_MAX)
                    and (type(value) is not str or value.isascii())
                ):
                    if report_filter is None or report_filter.offer(
                        device_id, prop, value, good, ts_ms, _policy(policy_for, prop)
                    ):
                        params[prop] = value
                    continue
            checked = self._check(prop, reading)
            if not checked.in_report:
                if checked.diagnostic is not None:
                    diagnostics.append(checked.diagnostic)
                continue
            if report_filter is not None:
                policy = _policy(policy_for, prop)
                reason = "" if checked.diagnostic is None else checked.diagnostic.message
                if not report_filter.offer(
                    device_id, prop, checked.value, checked.quality, ts_ms, policy, reason=reason
                ):
                    continue
            params[prop] = checked.value
            if checked.quality != Quality.GOOD:
                param_quality[prop] = checked.quality
            if checked.diagnostic is not None:
                diagnostics.append(checked.diagnostic)
        out: list[Message] = []
        if params:
            out.append(
                Message.property_report(
                    self._model,
                    device_id,
                    params,
                    ts_ms=ts_ms,
                    quality=worst_quality(param_quality.values()),
                    param_quality=param_quality,
                )
            )
        for diag in diagnostics:
            out.append(
                Message.event(self._model, device_id, DIAGNOSTIC_EVENT, diag.params(), ts_ms=ts_ms)
            )
        return out

    def build_event(
        self, device_id: str, ts_ms: int, event_id: str, outputs: Mapping[str, Any]
    ) -> list[Message]:
        """The event a device raised, checked against the model; an event the model does not
        declare, or outputs that do not fit it, become one diagnostic event instead."""
        issues = self._validator.check_event(event_id, outputs)
        if not issues:
            try:
                return [Message.event(self._model, device_id, event_id, dict(outputs), ts_ms=ts_ms)]
            except MessageError as exc:
                diag = Diagnostic(
                    event_id, "message", "encoding", event_id, _cut(str(exc)), Quality.BAD
                )
        else:
            first = issues[0]
            diag = Diagnostic(
                event_id, "validator", first.code, first.path, _cut(first.message), Quality.BAD
            )
        return [Message.event(self._model, device_id, DIAGNOSTIC_EVENT, diag.params(), ts_ms=ts_ms)]


_EVERY_READING: Final = ReportPolicy()
#: JSON scalars the fast path of :meth:`ReportBuilder.build` passes through unchanged
_PLAIN: Final = frozenset({float, int, bool, str})
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def _policy(
    policy_for: Callable[[str], ReportPolicy] | Mapping[str, ReportPolicy] | None, prop: str
) -> ReportPolicy:
    if policy_for is None:
        return _EVERY_READING
    if isinstance(policy_for, Mapping):
        return policy_for.get(prop, _EVERY_READING)
    return policy_for(prop)
