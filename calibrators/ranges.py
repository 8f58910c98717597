"""``TensorRanges``: the one object that passes from calibration to QDQ insertion, and its ``ranges.json`` file.

Schema version 1 (every key is required)::

    {
      "schema_version": 1,
      "model_sha256": "<64 lowercase hex digits of the model the ranges belong to>",
      "settings": {"method": "ndtc", "params": {...}, "estimator": {...}, "aggregation": {...},
                   "seed": 0, "num_bins": 2048},
      "amax": {"<tensor>": 3.25, ...},                       # per tensor, > 0, in the tensor's units
      "group_bounds": [[0, 249], [250, 999]],                # inclusive time-step ranges; [] without groups
      "group_amax": {"<tensor>": [2.5, 3.25], ...},          # one amax per group; {} without groups
      "step_summary": {"<tensor>": {"steps": [...], "absmax": [...]}, ...}   # for plots
    }

Files are written with sorted keys and ``repr`` floats, so equal ranges give byte-identical files and every float
reads back exactly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibrators.settings import AggregationConfig, EstimatorConfig, GroupBounds, group_of
from common.atomic import write_json
from common.errors import UserError

SCHEMA_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TOP_KEYS = ("schema_version", "model_sha256", "settings", "amax", "group_bounds", "group_amax", "step_summary")
_SETTINGS_KEYS = ("method", "params", "estimator", "aggregation", "seed", "num_bins")


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON data (dict/list/str/int/float/bool/None, finite floats); UserError naming ``where``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise UserError(f"{where} must be finite, got {value!r}")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise UserError(f"{where} keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise UserError(f"{where} must be plain JSON data, got {type(value).__name__}")


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"{where} must be an integer, got {value!r}")
    return int(value)


def _amax(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UserError(f"{where} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        raise UserError(f"{where} must be finite and > 0, got {v!r}")
    return v


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise UserError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{where} must be a list, got {type(value).__name__}")
    return list(value)


@dataclass(frozen=True)
class CalibrationSettings:
    """Everything that decided the ranges, recorded to reproduce them.

    method: calibration-input method (e.g. "ndtc", "uniform"). params: its parameters (plain JSON values).
    estimator / aggregation: the range estimator and the time-step aggregation. seed: the calibration seed.
    num_bins: histogram bins per (tensor, step).
    """

    method: str
    params: Mapping[str, Any]
    estimator: EstimatorConfig
    aggregation: AggregationConfig
    seed: int
    num_bins: int

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise UserError(f"settings.method must be a non-empty string, got {self.method!r}")
        object.__setattr__(self, "params", _plain(_mapping(self.params, "settings.params"), "settings.params"))
        if not isinstance(self.estimator, EstimatorConfig):
            raise UserError("settings.estimator must be an EstimatorConfig")
        if not isinstance(self.aggregation, AggregationConfig):
            raise UserError("settings.aggregation must be an AggregationConfig")
        object.__setattr__(self, "seed", _int(self.seed, "settings.seed"))
        object.__setattr__(self, "num_bins", _int(self.num_bins, "settings.num_bins"))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "method": self.method,
            "params": dict(self.params),
            "estimator": self.estimator.to_dict(),
            "aggregation": self.aggregation.to_dict(),
            "seed": self.seed,
            "num_bins": self.num_bins,
        }

    @classmethod
    def from_dict(cls, data: Any) -> CalibrationSettings:
        """Inverse of ``to_dict``; UserError naming the bad key."""
        d = _mapping(data, "settings")
        _exact_keys(d, _SETTINGS_KEYS, "settings")
        return cls(
            method=d["method"],
            params=_mapping(d["params"], "settings.params"),
            estimator=EstimatorConfig.from_dict(_mapping(d["estimator"], "settings.estimator")),
            aggregation=AggregationConfig.from_dict(_mapping(d["aggregation"], "settings.aggregation")),
            seed=d["seed"],
            num_bins=d["num_bins"],
        )


@dataclass(frozen=True)
class StepSummary:
    """Per-step abs-max of one tensor, for plots: ``steps`` (time steps, ascending) and ``absmax`` (same length)."""

    steps: list[int]
    absmax: list[float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", [_int(t, "step_summary.steps") for t in _list(self.steps, "steps")])
        values = []
        for v in _list(self.absmax, "step_summary.absmax"):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise UserError(f"step_summary.absmax values must be numbers, got {v!r}")
            if not math.isfinite(float(v)) or float(v) < 0.0:
                raise UserError(f"step_summary.absmax values must be finite and >= 0, got {v!r}")
            values.append(float(v))
        object.__setattr__(self, "absmax", values)
        if len(self.steps) != len(self.absmax):
            raise UserError(f"step_summary has {len(self.steps)} steps but {len(self.absmax)} absmax values")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise UserError("step_summary.steps must be strictly ascending")


def _exact_keys(d: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in d]
    unknown = sorted(set(d) - set(keys))
    if missing:
        raise UserError(f"{where} is missing key(s) {missing}")
    if unknown:
        raise UserError(f"{where} has unknown key(s) {unknown}")


@dataclass(frozen=True)
class TensorRanges:
    """Calibrated ranges of one model: per-tensor amax, optional per-step-group amax, and how they were made.

    model_sha256: sha256 (hex) of the model they belong to. amax: tensor name -> amax > 0 (tensor units).
    group_bounds: inclusive ``(first, last)`` time-step ranges, ascending; empty without groups.
    group_amax: tensor name -> one amax per group (empty without groups). step_summary: tensor -> per-step abs-max.
    """

    model_sha256: str
    settings: CalibrationSettings
    amax: dict[str, float]
    group_bounds: list[GroupBounds] = field(default_factory=list)
    group_amax: dict[str, list[float]] = field(default_factory=dict)
    step_summary: dict[str, StepSummary] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise UserError(
                f"ranges schema version {self.schema_version!r} is unknown (this program reads {SCHEMA_VERSION})"
            )
        if not isinstance(self.model_sha256, str) or not _SHA256.fullmatch(self.model_sha256):
            raise UserError(f"model_sha256 must be 64 lowercase hex digits, got {self.model_sha256!r}")
        if not isinstance(self.settings, CalibrationSettings):
            raise UserError("settings must be a CalibrationSettings")
        amax = {str(k): _amax(v, f"amax of tensor '{k}'") for k, v in _mapping(self.amax, "amax").items()}
        object.__setattr__(self, "amax", amax)

        bounds: list[GroupBounds] = []
        for i, b in enumerate(_list(self.group_bounds, "group_bounds")):
            pair = _list(b, f"group_bounds[{i}]")
            if len(pair) != 2:
                raise UserError(f"group_bounds[{i}] must be [first, last], got {b!r}")
            first, last = _int(pair[0], f"group_bounds[{i}][0]"), _int(pair[1], f"group_bounds[{i}][1]")
            if last < first or (bounds and first <= bounds[-1][1]):
                raise UserError(f"group_bounds[{i}] = {[first, last]} is empty or overlaps the group before it")
            bounds.append((first, last))
        object.__setattr__(self, "group_bounds", bounds)

        groups: dict[str, list[float]] = {}
        for name, values in _mapping(self.group_amax, "group_amax").items():
            if name not in amax:
                raise UserError(f"group_amax names tensor '{name}' that has no amax")
            vals = _list(values, f"group_amax of tensor '{name}'")
            if len(vals) != len(bounds):
                raise UserError(f"group_amax of tensor '{name}' has {len(vals)} values for {len(bounds)} groups")
            groups[name] = [_amax(v, f"group {g} amax of tensor '{name}'") for g, v in enumerate(vals)]
        if bounds and set(groups) != set(amax):
            raise UserError(f"group_amax is missing tensor(s) {sorted(set(amax) - set(groups))[:5]}")
        object.__setattr__(self, "group_amax", groups)

        summary: dict[str, StepSummary] = {}
        for name, s in _mapping(self.step_summary, "step_summary").items():
            if isinstance(s, StepSummary):
                summary[name] = s
            else:
                d = _mapping(s, f"step_summary of tensor '{name}'")
                _exact_keys(d, ("steps", "absmax"), f"step_summary of tensor '{name}'")
                summary[name] = StepSummary(steps=d["steps"], absmax=d["absmax"])
        object.__setattr__(self, "step_summary", summary)

    # ------------------------------------------------------------------------------------------------ queries

    def group_of(self, t: int) -> int:
        """Index of the step group holding time step ``t`` (nearest end group outside); ValueError without groups."""
        return group_of(self.group_bounds, t)

    def amax_at(self, name: str, t: int) -> float:
        """The amax of ``name`` for time step ``t``: its group's amax with groups, else the tensor amax."""
        if self.group_bounds:
            return self.group_amax[name][self.group_of(t)]
        return self.amax[name]

    # ------------------------------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the ``ranges.json`` content)."""
        return {
            "schema_version": self.schema_version,
            "model_sha256": self.model_sha256,
            "settings": self.settings.to_dict(),
            "amax": dict(self.amax),
            "group_bounds": [[first, last] for first, last in self.group_bounds],
            "group_amax": {k: list(v) for k, v in self.group_amax.items()},
            "step_summary": {
                k: {"steps": list(s.steps), "absmax": list(s.absmax)} for k, s in self.step_summary.items()
            },
        }

    def to_json(self) -> str:
        """The exact text ``save`` writes: sorted keys, 2-space indent, ``repr`` floats, trailing newline."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def save(self, path: Path | str) -> None:
        """Write ``ranges.json`` atomically (nothing half-written remains)."""
        write_json(Path(path), self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> TensorRanges:
        """Validate and build from plain JSON data; UserError (one line) naming the bad field."""
        d = _mapping(data, "ranges file")
        if "schema_version" not in d:
            raise UserError("ranges file has no schema_version")
        version = d["schema_version"]
        if isinstance(version, bool) or version != SCHEMA_VERSION:
            raise UserError(f"ranges schema version {version!r} is unknown (this program reads {SCHEMA_VERSION})")
        _exact_keys(d, _TOP_KEYS, "ranges file")
        return cls(
            model_sha256=d["model_sha256"],
            settings=CalibrationSettings.from_dict(d["settings"]),
            amax=dict(_mapping(d["amax"], "amax")),
            group_bounds=_list(d["group_bounds"], "group_bounds"),
            group_amax=dict(_mapping(d["group_amax"], "group_amax")),
            step_summary=dict(_mapping(d["step_summary"], "step_summary")),
            schema_version=SCHEMA_VERSION,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "<ranges>") -> TensorRanges:
        """Parse ``ranges.json`` text; UserError "``source``: ..." if it is corrupt or invalid."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}: corrupt ranges file (invalid JSON: {exc.msg} at line {exc.lineno})") from exc
        try:
            return cls.from_dict(data)
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from exc

    @classmethod
    def load(cls, path: Path | str, expected_model_sha256: str | None = None) -> TensorRanges:
        """Read ``ranges.json``; UserError naming the file if it is unreadable, corrupt, of an unknown schema
        version, or (when ``expected_model_sha256`` is given) calibrated for a different model."""
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise UserError(f"{path}: cannot read ranges file ({exc.strerror or exc})") from exc
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: corrupt ranges file (not UTF-8 text)") from exc
        ranges = cls.from_json(text, source=str(path))
        if expected_model_sha256 is not None and ranges.model_sha256 != expected_model_sha256.lower():
            raise UserError(
                f"{path}: ranges were calibrated for model sha256 {ranges.model_sha256[:16]}..., "
                f"not this model ({expected_model_sha256.lower()[:16]}...); re-run calibrate for it"
            )
        return ranges
