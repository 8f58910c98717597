"""The manifest of a time-step-grouped Q/DQ artifact set (``quantize --timestep-groups K``).

K Q/DQ graphs of one target that differ only in their activation scales, one per group of diffusion time steps, with
their weights stored once in one external-data file. ``model.int8.<tag>.onnx`` stays the global-scale graph (for
every tool that takes one graph, and runtimes that do not switch); the manifest beside it,
``model.int8.<tag>.groups.json``, names the group graphs::

    {"schema_version": 1, "target": "onnxruntime", "shared_data": "model.int8.ort.groups.data",
     "groups": [{"first_t": 0, "last_t": 239, "model": "model.int8.ort.g0.onnx", "model_sha256": "..."}, ...]}

Time steps are diffusion time steps (0 = clean); ``first_t``/``last_t`` are inclusive; a time step outside every
group goes to the nearest end group (calibrators.settings.group_of, the rule the ranges were computed with).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import write_json
from common.errors import UserError
from common.jsonfile import read_json

SCHEMA_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")


def manifest_path(model: Path) -> Path:
    """The manifest beside a Q/DQ model: ``model.int8.ort.onnx`` -> ``model.int8.ort.groups.json``."""
    return model.with_name(model.name.removesuffix(".onnx") + ".groups.json")


def group_model_name(model: Path, index: int) -> str:
    """File name of group ``index``'s graph: ``model.int8.ort.onnx`` -> ``model.int8.ort.g0.onnx``."""
    return model.name.removesuffix(".onnx") + f".g{index}.onnx"


def shared_data_name(model: Path) -> str:
    """The one external-data file the group graphs share: ``model.int8.ort.groups.data``."""
    return model.name.removesuffix(".onnx") + ".groups.data"


@dataclass(frozen=True)
class GroupEntry:
    """One group: inclusive diffusion time steps ``first_t``..``last_t``, its graph's file name and sha256."""

    first_t: int
    last_t: int
    model: str
    model_sha256: str


@dataclass(frozen=True)
class GroupManifest:
    """K group graphs of one target (``groups`` ascending in t, non-overlapping) sharing ``shared_data``."""

    target: str
    groups: tuple[GroupEntry, ...]
    shared_data: str
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not self.groups:
            raise UserError("a group manifest needs at least one group")
        for i, g in enumerate(self.groups):
            if g.last_t < g.first_t or (i and g.first_t <= self.groups[i - 1].last_t):
                raise UserError(f"group {i} [{g.first_t}, {g.last_t}] is empty or overlaps the group before it")
            if "/" in g.model or "\\" in g.model or not g.model.endswith(".onnx"):
                raise UserError(f"group {i} model '{g.model}' must be a .onnx file name beside the manifest")

    @property
    def bounds(self) -> list[tuple[int, int]]:
        return [(g.first_t, g.last_t) for g in self.groups]

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "target": self.target, "shared_data": self.shared_data,
                "groups": [{"first_t": g.first_t, "last_t": g.last_t, "model": g.model,
                            "model_sha256": g.model_sha256} for g in self.groups]}

    @classmethod
    def from_json(cls, data: Any, source: str = "<group manifest>") -> GroupManifest:
        """Inverse of ``to_json``; UserError naming ``source`` and what is wrong."""
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"'{source}' is not a time-step group manifest of schema version {SCHEMA_VERSION}")
        try:
            groups = []
            for i, g in enumerate(data["groups"]):
                first, last = g["first_t"], g["last_t"]
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in (first, last)):
                    raise UserError(f"'{source}': group {i} bounds must be integers, got {[first, last]}")
                if not isinstance(g["model_sha256"], str) or not _SHA256.fullmatch(g["model_sha256"]):
                    raise UserError(f"'{source}': group {i} model_sha256 is not a sha256")
                groups.append(GroupEntry(first, last, str(g["model"]), g["model_sha256"]))
            return cls(target=str(data["target"]), groups=tuple(groups), shared_data=str(data["shared_data"]))
        except (KeyError, TypeError) as exc:
            raise UserError(f"'{source}' is not a complete group manifest (bad or missing {exc})") from exc
        except UserError as exc:
            if str(exc).startswith(f"'{source}'"):
                raise
            raise UserError(f"'{source}': {exc}") from exc

    def save(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> GroupManifest:
        """Read and check a manifest: every group graph must exist beside it (UserError naming the file)."""
        data = read_json(path)
        if data is None:
            raise UserError(f"no group manifest '{path}': run python -m tools quantize --timestep-groups K")
        manifest = cls.from_json(data, str(path))
        for g in manifest.groups:
            if not (path.parent / g.model).is_file():
                raise UserError(f"'{path}' names group graph '{g.model}', which does not exist: quantize again")
        return manifest

    def model_paths(self, folder: Path) -> list[Path]:
        return [folder / g.model for g in self.groups]


def grouped_manifest_for(model: Path) -> GroupManifest | None:
    """The manifest of ``model``'s group graphs when one is beside it, else None."""
    path = manifest_path(model)
    return GroupManifest.load(path) if path.is_file() else None


def remove_group_files(model: Path) -> None:
    """Delete the group set beside ``model`` (the manifest first, so nothing routes to a half-removed set): called
    when ``model`` is written again, so no stale group graphs outlive the graph they were quantized with."""
    path = manifest_path(model)
    if not path.is_file():
        return
    data = read_json(path) or {}
    path.unlink()
    names = [g.get("model") for g in data.get("groups", []) if isinstance(g, dict)] + [data.get("shared_data")]
    for name in names:
        if isinstance(name, str) and "/" not in name and "\\" not in name and name:
            (model.parent / name).unlink(missing_ok=True)
