"""Who a WoT document is and whom it references: model name and version (``tmx:name``, else
derived from title or id), and the ``tm:extends`` / ``tm:submodel`` links read into our
``extends`` and :class:`Component` (from ``tmx:model``, else the target document's identity,
loaded from ``ref_dir`` by the :class:`Resolver`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from thing_models.formats.wot_export import default_href
from thing_models.formats.wot_refs import Resolver
from thing_models.formats.wot_terms import (
    TMX,
    Ctx,
    child,
    is_placeholder,
    sanitize_identifier,
    slugify,
)
from thing_models.model import IDENTIFIER_RE, MODEL_NAME_RE, Component, ModelRef, SemVer

__all__ = ["Links", "identity", "parse_version", "read_links"]


def parse_version(text: str) -> SemVer | None:
    """``text`` as a semantic version, padding ``1`` and ``1.2`` and dropping a leading v."""
    core = text.strip().removeprefix("v").removeprefix("V")
    if re.fullmatch(r"\d+(\.\d+)?", core):
        core += ".0" * (2 - core.count("."))
    try:
        return SemVer.parse(core)
    except ValueError:
        return None


def identity(ctx: Ctx, doc: dict[str, Any], tm: bool) -> tuple[str, str]:
    """A document's model name (``tmx:name``, else from title, else id) and version text."""
    declared = doc.get(f"{TMX}:name")
    if isinstance(declared, str) and MODEL_NAME_RE.match(declared):
        name = declared
    else:
        if declared is not None:
            ctx.error(
                child("$", f"{TMX}:name"), "not a model name", declared, MODEL_NAME_RE.pattern
            )
        slug = next(
            (
                slugify(v)
                for v in (doc.get("title"), doc.get("id"))
                if isinstance(v, str) and slugify(v)
            ),
            "thing",
        )
        name = f"wot.import/{slug}"
    raw = doc.get("version")
    text = ""
    if isinstance(raw, dict):
        order = ("model", "instance") if tm else ("instance", "model")
        text = next((raw[k] for k in order if isinstance(raw.get(k), str)), "")
    elif tm and is_placeholder(raw):
        ctx.note("$.version", f"placeholder {raw!r} has no value")
    elif raw is not None:
        ctx.error("$.version", "wrong type", raw, 'an object such as {"model": "1.0.0"}')
    return name, text


def _target_ref(ctx: Ctx, resolver: Resolver, link: dict[str, Any], path: str) -> ModelRef | None:
    """The model a tm:extends or tm:submodel link names (``tmx:model``, else its document)."""
    declared = link.get(f"{TMX}:model")
    if declared is not None:
        try:
            return ModelRef.parse(declared) if isinstance(declared, str) else None
        except ValueError as exc:
            ctx.error(child(path, f"{TMX}:model"), str(exc), declared)
            return None
    href = link.get("href")
    if not isinstance(href, str):
        ctx.error(child(path, "href"), "a link needs an href", href, "a URI")
        return None
    target = resolver.load(href, child(path, "href"))
    if target is None:
        return None
    name, text = identity(Ctx(href, tm=True), target, True)
    semver = parse_version(text) if text else None
    return ModelRef(name, str(semver) if semver else "")


@dataclass(slots=True)
class Links:
    extends: ModelRef | None = None
    components: list[Component] = field(default_factory=list)
    kept: list[Any] = field(default_factory=list)
    hrefs: dict[str, str] = field(default_factory=dict)


def read_links(ctx: Ctx, resolver: Resolver, doc: dict[str, Any]) -> Links:
    out = Links()
    for index, link in enumerate(ctx.get_list(doc, "links", "$") or []):
        path = child("$.links", index)
        rel = link.get("rel") if isinstance(link, dict) else None
        submodel = rel == "tm:submodel" or (rel == "item" and f"{TMX}:model" in link)
        if not isinstance(link, dict) or not (rel == "tm:extends" or submodel):
            out.kept.append(link)
            continue
        if rel == "tm:extends" and out.extends is not None:
            ctx.note(path, "a second tm:extends: our model extends one parent; link kept as is")
            out.kept.append(link)
            continue
        ref = _target_ref(ctx, resolver, link, path)
        if ref is None:
            out.kept.append(link)
            continue
        href = link.get("href")
        if rel == "tm:extends":
            out.extends = ref
            key = "tm:extends"
        else:
            key = _component(ctx, link, ref, path, out)
        if isinstance(href, str) and href != default_href(ref):
            out.hrefs[key] = href
    return out


def _component(ctx: Ctx, link: dict[str, Any], ref: ModelRef, path: str, out: Links) -> str:
    instance = link.get("instanceName")
    if not isinstance(instance, str) or not IDENTIFIER_RE.match(instance):
        fallback = sanitize_identifier(str(instance or ref.name.rsplit("/", 1)[-1]))
        ctx.note(path, f"instanceName {instance!r} is not an identifier; using {fallback!r}")
        instance = fallback
    if any(c.instance == instance for c in out.components):
        ctx.error(child(path, "instanceName"), "duplicate component instance", instance)
    title = link.get(f"{TMX}:title", "")
    text = link.get(f"{TMX}:description", "")
    if not isinstance(title, str) or not isinstance(text, str):
        ctx.error(path, "component title and description must be strings", link)
        title, text = "", ""
    out.components.append(Component(instance, ref, title, text))
    return instance
