"""TensorRT engines for the other components of a text-to-image work folder: text encoder(s) and VAE decoder,
FP16, one engine each (``WORK/<component>.fp16.plan`` + ``.plan.json``), as TensorRT's demo/Diffusion deploys them.

Each profile comes from the component's record in export.json (``components.<name>.inputs``) and the work folder's
batch range (``profile``). The text encoders' opt/max batch doubles with guidance like the UNet's (prompt and
negative-prompt rows); the VAE decoder's does not (it decodes one latent per image).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.errors import UserError
from engines.tensorrt.plan import Profile
from engines.tensorrt.profile_ranges import axis_bounds, guided, profile_ranges, shape_range

COMPONENT_PRECISION = "fp16"  # text encoders and VAE stay float: FP16 engines


def component_names(info: dict[str, Any]) -> list[str]:
    """The non-UNet components export.json lists (text encoder(s), VAE decoder); [] for a UNet work folder."""
    return list((info.get("components") or {}).keys())


def component_plan_path(work_root: Path, name: str) -> Path:
    """``WORK/<component>.fp16.plan``."""
    return Path(work_root) / f"{name}.{COMPONENT_PRECISION}.plan"


def component_profile(info: dict[str, Any], name: str, min_batch: int | None = None, opt_batch: int | None = None,
                      max_batch: int | None = None) -> Profile:
    """The optimization profile of component ``name``: its inputs' shapes with the batch range of export.json's
    ``profile`` (flags override), doubled at opt/max for the text encoders when the pipeline guides."""
    comps = info.get("components") or {}
    if name not in comps:
        raise UserError(f"export.json lists no component '{name}' (known: {', '.join(comps) or 'none'})")
    batch = axis_bounds(profile_ranges(info, min_batch, opt_batch, max_batch), "batch")
    text = name in ((info.get("text_to_image") or {}).get("text_encoders") or [])
    return {n: shape_range(spec["shape"], {"batch": guided(batch, text)}) for n, spec in comps[name]["inputs"].items()}
