"""Converters between the canonical model and other formats (our YAML, Alibaba TSL, W3C WoT)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from thing_models.model import ThingModel

__all__ = ["Exported", "Imported"]


@dataclass(frozen=True, slots=True)
class Exported:
    """A model written in another format, and what that format could not express (by name)."""

    document: dict[str, Any]
    losses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Imported:
    """A model read from another format, with notes on anything approximated or unresolved."""

    model: ThingModel
    notes: tuple[str, ...] = ()
