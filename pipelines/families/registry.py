"""The one place a family is looked up: by name (export.json), from a model folder, or from an old export.json.

Adding a family is one module plus one line in ``FAMILIES`` (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from common.errors import UserError
from pipelines.families import ddpm, dit, flux, pixart, sd, sd3, sdxl
from pipelines.families.family import Family

#: Every family, the bare-denoiser family first.
FAMILIES: tuple[Family, ...] = (ddpm.FAMILY, sd.FAMILY, sdxl.FAMILY, sd3.FAMILY, flux.FAMILY, pixart.FAMILY, dit.FAMILY)
BARE = ddpm.FAMILY


def family_named(name: str) -> Family:
    """The family recorded as ``name``; a UserError naming the known ones otherwise."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise UserError(f"unknown model family '{name}' (known: {', '.join(f.name for f in FAMILIES)})")


def family_for_pipeline(class_name: str, listed: Iterable[str]) -> Family:
    """The family of a pipeline folder: by model_index.json's ``_class_name``; a class no family names (a
    community or img2img pipeline) by its structure — the family whose text encoders are exactly the ``listed``
    components (model_index.json entries that are not null)."""
    for family in FAMILIES:
        if class_name in family.pipeline_classes:
            return family
    present = set(listed)
    by_structure = [f for f in FAMILIES if f.text_encoders and {s.encoder for s in f.text_encoders} <= present]
    if not by_structure:
        return BARE
    return max(by_structure, key=lambda f: len(f.text_encoders))


def family_of(info: dict[str, Any]) -> Family:
    """The family of an exported work folder (export.json). Folders exported before families were recorded hold
    no ``family``: theirs is inferred here, once — SDXL's flag, else any text encoder means SD, else bare."""
    name = info.get("family")
    if name is not None:
        return family_named(str(name))
    t2i = info.get("text_to_image")
    if t2i is None:
        return BARE
    return sdxl.FAMILY if t2i.get("sdxl") else sd.FAMILY
