"""``QuantizeRecord``: what ``quantize.<tag>.json`` holds about one Q/DQ model, with its one typed loader."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common.atomic import write_json
from common.errors import UserError
from quantization.qdq_policy import QDQPolicy

SCHEMA_VERSION = 2  # 2: + target, activation_scales; version-1 records (model.int8.onnx) still load
#: The activation scales of the graph at ``model``: one amax per tensor for all time steps. The ranges' per-step-group
#: amaxes (calibrate --aggregation groups) are used by ``quantize --timestep-groups K``: its group graphs
#: (``timestep_groups``) each say which group amaxes they hold.
GLOBAL_SCALES = "global: one amax per tensor for every time step"


@dataclass(frozen=True)
class QuantizeRecord:
    """One quantization: the policy and inputs that made a Q/DQ model, and what it holds.

    model / model_sha256: the Q/DQ file's name and sha256 (filled in when it is saved). summary: counts of the plan
    (quantized activations and weights, split shortcut convs, float nodes, INT4 blocks). op_counts: Q/DQ and
    weighted ops of the written graph. weight_memory_bytes: initializer bytes by storage type, of the source and
    the quantized model. weight_rounding: AdaRound's report, or None."""

    policy: QDQPolicy
    source_model_sha256: str
    ranges_file: str
    ranges_settings: dict[str, Any]
    summary: dict[str, int]
    op_counts: dict[str, int]
    float_nodes: list[str]
    kernels: list[str]
    weight_memory_bytes: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    weight_rounding: dict[str, Any] | None = None
    sensitivity_keep_float: dict[str, Any] = field(
        default_factory=lambda: {"count": 0, "nodes": [], "file": None})
    activation_scales: str = GLOBAL_SCALES
    timestep_groups: dict[str, Any] | None = None  # quantize --timestep-groups K: the group graphs and their scales
    smoothquant: dict[str, Any] | None = None  # quantize --smoothquant ALPHA: alpha and each smoothed input
    command: str = ""
    model: str = ""
    model_sha256: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def target(self) -> str:
        return self.policy.target

    @property
    def kept_float_by_sensitivity(self) -> list[str]:
        return list(self.sensitivity_keep_float.get("nodes") or [])

    def saved_as(self, model: str, model_sha256: str, command: str) -> QuantizeRecord:
        return replace(self, model=model, model_sha256=model_sha256, command=command)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "target": self.target,
            "policy": self.policy.to_json(),
            "source_model_sha256": self.source_model_sha256,
            "ranges": {"file": self.ranges_file, "settings": self.ranges_settings},
            "activation_scales": self.activation_scales,
            "timestep_groups": self.timestep_groups,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "summary": self.summary,
            "op_counts": self.op_counts,
            "float_nodes": self.float_nodes,
            "sensitivity_keep_float": self.sensitivity_keep_float,
            "kernels": self.kernels,
            "weight_memory_bytes": self.weight_memory_bytes,
            "weight_rounding": self.weight_rounding,
            "smoothquant": self.smoothquant,
            "warnings": self.warnings,
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "<quantize record>") -> QuantizeRecord:
        """Inverse of ``to_json`` (schema 1 or 2); UserError naming ``source`` and the bad key."""
        if not isinstance(data, dict):
            raise UserError(f"'{source}' is not a quantize record (a JSON object)")
        version = data.get("schema_version")
        if version not in (1, SCHEMA_VERSION):
            raise UserError(f"'{source}' has an unknown schema_version {version!r} (this program reads 1 and 2)")
        try:
            policy = QDQPolicy.from_json(data["policy"])
            if version == SCHEMA_VERSION and data["target"] != policy.target:
                raise UserError(f"'{source}': target '{data['target']}' differs from its policy's '{policy.target}'")
            return cls(
                policy=policy, source_model_sha256=str(data["source_model_sha256"]),
                ranges_file=str(data["ranges"]["file"]), ranges_settings=dict(data["ranges"]["settings"]),
                summary=dict(data["summary"]), op_counts=dict(data["op_counts"]),
                float_nodes=list(data["float_nodes"]), kernels=list(data["kernels"]),
                weight_memory_bytes=dict(data.get("weight_memory_bytes") or {}),
                warnings=list(data.get("warnings") or []), weight_rounding=data.get("weight_rounding"),
                sensitivity_keep_float=dict(data.get("sensitivity_keep_float") or
                                            {"count": 0, "nodes": [], "file": None}),
                activation_scales=str(data.get("activation_scales", GLOBAL_SCALES)),
                timestep_groups=data.get("timestep_groups"), smoothquant=data.get("smoothquant"),
                command=str(data.get("command", "")), model=str(data["model"]),
                model_sha256=str(data["model_sha256"]), schema_version=SCHEMA_VERSION)
        except (KeyError, TypeError) as exc:
            raise UserError(f"'{source}' is not a complete quantize record (bad or missing {exc})") from exc

    def save(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> QuantizeRecord:
        """Read a record; a missing, unreadable or malformed file is a UserError naming it."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise UserError(f"no quantize record '{path}': run python -m tools quantize") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read '{path}': {exc}") from exc
        return cls.from_json(data, str(path))

