"""The ``calib/`` cache: calibration samples saved as plain .npy arrays with their time steps and step indices.

One folder per settings key (sha256 of the source settings and the model sha256), holding ``x.npy`` (N×B×C×H×W),
``t.npy`` (N, int64 time steps), ``step.npy`` (N, int64 sampler step indices; -1 for ``noise``), optionally
``cond.npy`` (N×B×L×D, ``encoder_hidden_states``), and ``settings.json``. Written to a temporary folder and renamed
into place.

Format versions (``store.json``, absent in version 1):
- 1: the files above.
- 2: ``store.json`` = ``{"format_version": 2, "added": [names]}`` and one ``added.<name>.npy`` (N×B×...) per further
  conditioning input of the UNet (SDXL: ``added.text_embeds.npy`` N×B×P, ``added.time_ids.npy`` N×B×6).
Version-1 folders load as before (no added conditions); a folder of a newer version than this code knows is
regenerated, never misread.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from calibrators.sample import CalibSample
from common.atomic import atomic_dir

FORMAT_VERSION = 2
STORE_FILE = "store.json"
_INPUT_NAME = re.compile(r"^[A-Za-z0-9_]+$")  # an added input's name becomes part of a file name


def settings_key(settings: dict[str, Any]) -> str:
    """A short stable key for ``settings`` (JSON with sorted keys)."""
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_folder(calib_dir: Path, settings: dict[str, Any]) -> Path:
    return Path(calib_dir) / settings_key(settings)


def _added_names(folder: Path) -> list[str] | None:
    """The added-condition names a store folder holds ([] for format 1), or None for an unknown format."""
    path = folder / STORE_FILE
    if not path.is_file():
        return []  # format 1
    store = json.loads(path.read_text())
    if not isinstance(store, dict) or store.get("format_version") != FORMAT_VERSION:
        return None
    names = store.get("added", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and _INPUT_NAME.match(n) for n in names):
        return None
    return names


def load_cached(calib_dir: Path, settings: dict[str, Any]) -> list[CalibSample] | None:
    """The cached samples for ``settings``, or None when absent, damaged, of an unknown format or written for other
    settings."""
    folder = cached_folder(calib_dir, settings)
    meta = folder / "settings.json"
    if not meta.is_file():
        return None
    try:
        if json.loads(meta.read_text()) != settings:
            return None
        names = _added_names(folder)
        if names is None:
            return None
        x = np.load(folder / "x.npy", allow_pickle=False)
        t = np.load(folder / "t.npy", allow_pickle=False)
        step = np.load(folder / "step.npy", allow_pickle=False)
        cond = np.load(folder / "cond.npy", allow_pickle=False) if (folder / "cond.npy").is_file() else None
        added = {n: np.load(folder / f"added.{n}.npy", allow_pickle=False) for n in names}
    except (OSError, ValueError, json.JSONDecodeError):
        return None  # a damaged cache is regenerated, never trusted
    per_sample = [a for a in (cond, *added.values()) if a is not None]
    if not (len(x) == len(t) == len(step)) or any(a.ndim < 2 or a.shape[:2] != x.shape[:2] for a in per_sample):
        return None
    return [CalibSample(x[i], int(t[i]), int(step[i]), None if cond is None else cond[i],
                        {n: a[i] for n, a in added.items()}) for i in range(len(x))]


def save_samples(calib_dir: Path, settings: dict[str, Any], samples: Iterable[CalibSample]) -> list[CalibSample]:
    """Store ``samples`` under their settings key (atomically, format ``FORMAT_VERSION``) and return them as a
    list. Every sample carries the same conditioning inputs (those of the UNet)."""
    items = list(samples)
    names = sorted(items[0].added) if items else []
    for name in names:
        if not _INPUT_NAME.match(name):
            raise ValueError(f"added condition name {name!r} is not a plain identifier")
    if any(sorted(s.added) != names or (s.cond is None) != (items[0].cond is None) for s in items):
        raise ValueError("calibration samples carry different conditioning inputs")
    with atomic_dir(cached_folder(calib_dir, settings)) as tmp:
        np.save(tmp / "x.npy", np.stack([s.x for s in items]), allow_pickle=False)
        np.save(tmp / "t.npy", np.array([s.t for s in items], dtype=np.int64), allow_pickle=False)
        np.save(tmp / "step.npy", np.array([s.step for s in items], dtype=np.int64), allow_pickle=False)
        if items and items[0].cond is not None:
            np.save(tmp / "cond.npy", np.stack([s.cond for s in items]), allow_pickle=False)  # type: ignore[misc]
        for name in names:
            np.save(tmp / f"added.{name}.npy", np.stack([s.added[name] for s in items]), allow_pickle=False)
        (tmp / STORE_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, "added": names}, indent=2) + "\n")
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
