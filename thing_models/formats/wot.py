"""W3C Web of Things: Thing Models (TM) and Thing Descriptions (TD) 1.1, both ways.

Mapping
-------
=======================  ================================================================
ours                     WoT
=======================  ================================================================
name                     ``tmx:name`` (import without it: ``wot.import/<slug of title>``,
                         else of ``id``: a TD's id names one device, not its type)
version                  ``version.model`` (TM) / ``version.instance`` (TD)
title, description       ``title``, ``description``; vendor: ``tmx:vendor``
extends                  TM link ``rel: tm:extends`` (+ ``tmx:model``); a TD cannot: a loss
components               TM link ``rel: tm:submodel`` + ``instanceName`` (TD: ``rel: item``)
property                 property affordance; schema terms inline; ``readOnly: true`` = read
property.required        not listed in ``tm:optional`` (TD: ``tmx:optional``)
event                    event affordance; outputs = ``data`` object schema; ``tmx:level``
service                  action; inputs/outputs = ``input``/``output``; ``synchronous``
Modbus binding           ``modv:`` forms (see :mod:`~thing_models.formats.wot_modbus`);
                         ``modv`` is declared in ``@context`` (an undeclared one is accepted)
BACnet/MQTT/CoAP         ``tmx:bacnet``/``tmx:mqtt``/``tmx:coap`` (our exact JSON form; not
                         yet ``bacv:``/``mqv:``/``cov:`` forms a WoT consumer could use)
reporting                ``tmx:reporting``; other extensions: ``tmx:extensions``
=======================  ================================================================

The lossless scheme
-------------------
Everything WoT has no term for is written in our own vocabulary, prefix ``tmx`` bound to
``urn:community-iot-edge:wot#`` in ``@context`` (JSON-LD compact IRIs: any TD consumer ignores
them and the W3C TD/TM JSON Schemas accept them). Data types: a plain WoT schema *means*
:func:`~thing_models.formats.wot_schema.infer_type` (``enum``/const ``oneOf`` -> enum,
``integer`` -> int32 when both bounds fit int32 else int64, ``number`` -> double, ``string``
with ``format: date-time`` -> timestamp), and the export adds ``"tmx:dataType": "<ours>"``
exactly where that reading would differ (float, timestamp, an int32 without bounds...). Enum
labels are ``oneOf: [{"const", "title", "description"}]`` next to ``enum``; bool labels, unit
names and out-of-range terms use ``tmx:boolLabels``, ``tmx:unitName``, ``tmx:step``... So
ours -> TM -> ours gives an equal model. WoT terms we have no field for (``@context``, ``id``,
``base``, ``security``, ``observable``, non-Modbus forms, unresolved references...) are kept
in ``extensions["wot"]`` of the model or affordance and written back on export.

References are resolved from ``ref_dir`` only (by file name, never over the network): the
parent of ``tm:extends`` and each ``tm:submodel`` give a :class:`ModelRef` (inheritance is kept,
nothing merged); ``tm:ref`` copies the referenced definition in, local terms overriding.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from thing_models.formats import Exported, Imported
from thing_models.formats.wot_export import model_to_wot as _export
from thing_models.formats.wot_import import import_wot
from thing_models.model import ThingModel

__all__ = ["model_from_wot", "model_to_wot"]


def model_from_wot(
    doc: Any,
    *,
    source: str = "<wot>",
    placeholders: Mapping[str, str] | None = None,
    ref_dir: Path | None = None,
    name: str | None = None,
    version: str | None = None,
    allow_unresolved: bool = False,
) -> Imported:
    """Read a WoT Thing Model or Thing Description (a parsed JSON object or JSON text).

    ``placeholders`` fill a TM's ``{{NAME}}`` placeholders (those without a value stay as text
    and are noted). References (``tm:extends``, ``tm:ref``, ``tm:submodel``) are looked up by
    file name in ``ref_dir``; any not found raise :class:`UnresolvedReferenceError` listing them
    all, unless ``allow_unresolved`` (then they are kept as they are and noted). ``name`` and
    ``version`` override the document's. Raises :class:`ModelLoadError` (every problem, with
    its JSON path) or :class:`HostileInputError` (too big, too deep, placeholder bombs).
    """
    return import_wot(
        doc,
        source=source,
        placeholders=placeholders,
        ref_dir=ref_dir,
        name=name,
        version=version,
        allow_unresolved=allow_unresolved,
    )


def model_to_wot(
    model: ThingModel, *, kind: Literal["tm", "td"], base: str | None = None
) -> Exported:
    """Write ``model`` as a Thing Model (``"tm"``) or Thing Description (``"td"``).

    A TD gets ``nosec_sc`` security unless the model keeps its own, and a form on every
    affordance (Modbus forms from the binding, else ``<section>/<name>`` relative to ``base``).
    ``losses`` names what the target cannot express (a TD cannot extend another model).
    """
    return _export(model, kind=kind, base=base)
