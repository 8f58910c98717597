"""Find and load a diffusers UNet (and the scheduler config it is sampled with) from a local folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.hashing import sha256_files
from common.jsonfile import read_json
from common.lazy import lazy_import
from pipelines.families.family import Family
from pipelines.families.registry import BARE, FAMILIES

#: Denoiser classes and the folders of a pipeline they live in, over every family.
UNET_CLASSES = tuple(dict.fromkeys(c for f in FAMILIES for c in f.denoiser_classes))
DENOISER_FOLDERS = tuple(dict.fromkeys(f.denoiser_folder for f in FAMILIES))
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class ModelSource:
    """A located UNet folder: class, config, weight files, and the scheduler config found beside it."""

    unet_dir: Path
    class_name: str
    unet_config: dict[str, Any]
    weight_files: tuple[Path, ...]
    scheduler_config: dict[str, Any]
    scheduler_source: str  # path of scheduler_config.json, or "default:<class>"

    def weights_sha256(self) -> str:
        """SHA-256 over the weight files (sorted by name)."""
        return sha256_files(self.weight_files)


def _read_config(path: Path) -> dict[str, Any] | None:
    return read_json(path)


def locate_model(model_dir: Path, family: Family = BARE) -> ModelSource:
    """Accept a UNet folder (``config.json`` of a UNet class) or a pipeline folder with ``unet/``; without a
    ``scheduler/`` beside it, the ``family``'s default scheduler for that class."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise UserError(f"--model folder '{model_dir}' does not exist")
    if not model_dir.is_dir():
        raise UserError(f"--model '{model_dir}' is not a folder")
    candidates = [model_dir, *(model_dir / folder for folder in DENOISER_FOLDERS)]
    for unet_dir in candidates:
        cfg = _read_config(unet_dir / "config.json")
        if cfg is not None and cfg.get("_class_name") in UNET_CLASSES:
            break
    else:
        raise UserError(
            f"'{model_dir}' is not a diffusers UNet folder: no config.json with _class_name in "
            f"{'/'.join(UNET_CLASSES)} here or in unet/"
        )
    class_name = str(cfg["_class_name"])
    weights = tuple(sorted(p for p in unet_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()))
    if not weights:
        raise UserError(f"'{unet_dir}' has a UNet config but no weights (*.safetensors or *.bin)")
    pipeline_root = unet_dir.parent if unet_dir != model_dir or (model_dir.parent / "scheduler").is_dir() else None
    sched_path = pipeline_root / "scheduler" / "scheduler_config.json" if pipeline_root else None
    sched_cfg = _read_config(sched_path) if sched_path else None
    if sched_cfg is not None and sched_path is not None:
        source = str(sched_path)
    else:
        sched_cfg = family.default_scheduler(class_name)
        source = f"default:{sched_cfg['_class_name']}"
    return ModelSource(unet_dir, class_name, cfg, weights, sched_cfg, source)


def load_unet(source: ModelSource) -> Any:
    """Load the UNet in FP32, eval mode, from local files only (safetensors preferred; .bin via weights_only)."""
    diffusers = lazy_import("diffusers")
    cls = getattr(diffusers, source.class_name)
    use_safetensors = any(p.suffix == ".safetensors" for p in source.weight_files)
    try:
        unet = cls.from_pretrained(source.unet_dir, local_files_only=True, use_safetensors=use_safetensors,
                                   low_cpu_mem_usage=False)  # accelerate is not a dependency: no warning
    except (OSError, ValueError, RuntimeError, EnvironmentError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load the UNet from '{source.unet_dir}': {first}") from exc
    return unet.float().eval()
