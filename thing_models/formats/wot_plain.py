"""A generic, exact JSON form of the model's dataclasses, for the ``tmx:`` terms.

``to_plain`` writes a dataclass as an object of its non-default fields (enums as their values,
tuples as arrays); ``from_plain`` reads it back, checking every value against the field's type
hint and reporting the first mismatch with its JSON path. WoT has no words for Modbus scaling,
BACnet or MQTT bindings, report policies and the like; this keeps them without loss.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

from thing_models.formats.wot_terms import Ctx, child

__all__ = ["from_plain", "to_plain"]

T = TypeVar("T")


class _Mismatch(Exception):
    def __init__(self, path: str, message: str, value: Any, expected: str = "") -> None:
        super().__init__(message)
        self.path, self.message, self.value, self.expected = path, message, value, expected


def to_plain(value: Any) -> Any:
    """``value`` as JSON data; dataclass fields equal to their defaults are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for item in dataclasses.fields(value):
            attr = getattr(value, item.name)
            if not _is_default(item, attr):
                out[item.name] = to_plain(attr)
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def _is_default(item: dataclasses.Field[Any], value: Any) -> bool:
    if item.default is not dataclasses.MISSING:
        default: Any = item.default
    elif item.default_factory is not dataclasses.MISSING:
        default = item.default_factory()
    else:
        return False
    return bool(value == default) and isinstance(value, bool) == isinstance(default, bool)


def from_plain(ctx: Ctx, cls: type[T], data: Any, path: str) -> T | None:
    """Read an instance of dataclass ``cls`` from ``data``; None (and an error in ``ctx``) when
    a value does not fit."""
    try:
        result: T = _read(cls, data, path)
    except _Mismatch as exc:
        ctx.error(exc.path, exc.message, exc.value, exc.expected)
        return None
    return result


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _read(tp: Any, data: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return data
    if origin in (types.UnionType, typing.Union):
        return _read_union(typing.get_args(tp), data, path)
    if origin is tuple:
        return _read_tuple(typing.get_args(tp), data, path)
    if origin is not None and issubclass(origin, Mapping):
        if not isinstance(data, dict):
            raise _Mismatch(path, "wrong type", data, "a JSON object")
        return dict(data)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _read_dataclass(tp, data, path)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(data)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise _Mismatch(path, "not a known value", data, f"one of {choices}") from None
    if not _matches(tp, data):
        raise _Mismatch(path, "wrong type", data, _describe(tp))
    return float(data) if tp is float else data


def _matches(tp: Any, data: Any) -> bool:
    if tp is type(None):
        return data is None
    if tp is bool:
        return isinstance(data, bool)
    if tp is int:
        return isinstance(data, int) and not isinstance(data, bool)
    if tp is float:
        ok = isinstance(data, int | float) and not isinstance(data, bool)
        return ok and math.isfinite(data)
    if tp is str:
        return isinstance(data, str)
    return False


def _describe(tp: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _read_union(options: tuple[Any, ...], data: Any, path: str) -> Any:
    for option in options:
        simple = option in (bool, int, float, str, type(None))
        if simple and _matches(option, data):
            return float(data) if option is float else data
    for option in options:
        if option not in (bool, int, float, str, type(None)):
            return _read(option, data, path)
    raise _Mismatch(path, "wrong type", data, " or ".join(_describe(o) for o in options))


def _read_tuple(args: tuple[Any, ...], data: Any, path: str) -> tuple[Any, ...]:
    if not isinstance(data, list):
        raise _Mismatch(path, "wrong type", data, "a JSON array")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_read(args[0], item, child(path, i)) for i, item in enumerate(data))
    if len(data) != len(args):
        raise _Mismatch(path, f"expected {len(args)} items", data)
    pairs = enumerate(zip(args, data, strict=True))
    return tuple(_read(a, item, child(path, i)) for i, (a, item) in pairs)


def _read_dataclass(cls: type[Any], data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise _Mismatch(path, "wrong type", data, f"a JSON object ({cls.__name__})")
    hints = _hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise _Mismatch(child(path, unknown[0]), f"unknown {cls.__name__} field", unknown[0])
    kwargs: dict[str, Any] = {}
    for name, item in names.items():
        if name in data:
            kwargs[name] = _read(hints[name], data[name], child(path, name))
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise _Mismatch(path, f"{cls.__name__} field {name!r} is missing", None)
    return cls(**kwargs)
