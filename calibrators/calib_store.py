"""The ``calib/`` cache: calibration samples saved as plain .npy arrays with their time steps and step indices.

One folder per settings key (sha256 of the source settings and the model sha256), holding ``x.npy`` (N×B×C×H×W),
``t.npy`` (N, int64 time steps), ``step.npy`` (N, int64 sampler step indices; -1 for ``noise``), optionally
``cond.npy`` (N×B×L×D), and ``settings.json``. Written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from calibrators.sample import CalibSample
from common.atomic import atomic_dir


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable key for ``settings`` (JSON with sorted keys)."""
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_folder(calib_dir: Path, settings: dict[str, Any]) -> Path:
    return Path(calib_dir) / settings_key(settings)


def load_cached(calib_dir: Path, settings: dict[str, Any]) -> list[CalibSample] | None:
    """The cached samples for ``settings``, or None when absent or written for other settings."""
    folder = cached_folder(calib_dir, settings)
    meta = folder / "settings.json"
    if not meta.is_file():
        return None
    try:
        if json.loads(meta.read_text()) != settings:
            return None
        x = np.load(folder / "x.npy", allow_pickle=False)
        t = np.load(folder / "t.npy", allow_pickle=False)
        step = np.load(folder / "step.npy", allow_pickle=False)
        cond = np.load(folder / "cond.npy", allow_pickle=False) if (folder / "cond.npy").is_file() else None
    except (OSError, ValueError, json.JSONDecodeError):
        return None  # a damaged cache is regenerated, never trusted
    if not (len(x) == len(t) == len(step)) or (cond is not None and len(cond) != len(x)):
        return None
    return [CalibSample(x[i], int(t[i]), int(step[i]), None if cond is None else cond[i]) for i in range(len(x))]


def save_samples(calib_dir: Path, settings: dict[str, Any], samples: Iterable[CalibSample]) -> list[CalibSample]:
    """Store ``samples`` under their settings key (atomically) and return them as a list."""
    items = list(samples)
    with atomic_dir(cached_folder(calib_dir, settings)) as tmp:
        np.save(tmp / "x.npy", np.stack([s.x for s in items]), allow_pickle=False)
        np.save(tmp / "t.npy", np.array([s.t for s in items], dtype=np.int64), allow_pickle=False)
        np.save(tmp / "step.npy", np.array([s.step for s in items], dtype=np.int64), allow_pickle=False)
        if items and items[0].cond is not None:
            np.save(tmp / "cond.npy", np.stack([s.cond for s in items]), allow_pickle=False)  # type: ignore[misc]
        (tmp / "settings.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return items


def find_cached(calib_dir: Path, model_sha256: str, source: dict[str, Any]) -> list[CalibSample] | None:
    """The cached samples generated for ``model_sha256`` with ``source`` settings (any conditioning), or None."""
    if not Path(calib_dir).is_dir():
        return None
    for meta in sorted(Path(calib_dir).glob("*/settings.json")):
        try:
            settings = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if settings.get("model_sha256") == model_sha256 and settings.get("source") == source:
            return load_cached(calib_dir, settings)
    return None
