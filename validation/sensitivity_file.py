"""``WORK/report/sensitivity.json``: the per-layer sensitivity ranking, its versioned schema and its checks.

Schema version 1::

    {
      "schema_version": 1,
      "model_sha256": "<sha256 of the FP32 model.onnx (+ data) the ranking was measured on>",
      "ranges_sha256": "<sha256 of the ranges.json used>",
      "policy": {...QDQPolicy.to_json()...},
      "settings": {"metric": "step", "steps": 50, "points": 5, "num": 4, "seed": 0, "scheduler": "ddim",
                   "step_indices": [0, 12, ...], "timesteps": [981, 741, ...], "what": "<one line>"},
      "layers": [{"node": "...", "op_type": "Conv", "mse": 1.2e-5, "cosine": 0.9999, "rank": 1}, ...],
      "command": "python -m tools sensitivity ...",
      "seconds": 41.2
    }

``layers`` is sorted by rank (1 = the largest error when only that layer is quantized). With metric ``step``,
``mse`` is the mean over the compared steps of the UNet output's mean squared error against FP32 (output units
squared, ε² for ε-prediction models) and ``cosine`` the mean over steps of the cosine similarity of the flattened
outputs; with metric ``image`` (no points/step_indices/timesteps), ``mse`` is the final images' MSE in [0, 1] pixel
units squared and ``cosine`` that of the final samples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.atomic import write_json
from common.errors import UserError
from common.jsonfile import read_json

SCHEMA_VERSION = 1
FILE_NAME = "sensitivity.json"


def sensitivity_file(precision: str = "int8") -> str:
    """The ranking's file name in WORK/report/: ``sensitivity.json`` (INT8), ``sensitivity.fp8.json`` (FP8: a layer's
    FP8 error differs from its INT8 error, so each format keeps its own ranking)."""
    return FILE_NAME if precision == "int8" else f"sensitivity.{precision}.json"


@dataclass(frozen=True)
class LayerSensitivity:
    """One quantized layer: the output error of the model in which only this layer is quantized."""

    node: str
    op_type: str
    mse: float
    cosine: float
    rank: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SensitivityResult:
    """The ranking plus what it was measured on (see the module docstring for the file format)."""

    model_sha256: str
    ranges_sha256: str
    policy: dict[str, Any]
    settings: dict[str, Any]
    layers: tuple[LayerSensitivity, ...]
    command: str = ""
    seconds: float = 0.0

    def most_sensitive(self, count: int) -> list[str]:
        """Node names of the ``count`` highest-ranked layers."""
        return [layer.node for layer in sorted(self.layers, key=lambda x: x.rank)[:count]]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION, "model_sha256": self.model_sha256, "ranges_sha256": self.ranges_sha256,
            "policy": self.policy, "settings": self.settings, "layers": [x.to_json() for x in self.layers],
            "command": self.command, "seconds": self.seconds,
        }

    def save(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def from_json(cls, data: Any, where: str) -> SensitivityResult:
        """Parse a loaded ``sensitivity.json``; a wrong schema is a UserError naming ``where``."""
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            raise UserError(f"'{where}' has an unknown schema (expected schema_version {SCHEMA_VERSION})")
        try:
            layers = tuple(LayerSensitivity(str(x["node"]), str(x["op_type"]), float(x["mse"]), float(x["cosine"]),
                                            int(x["rank"])) for x in data["layers"])
            return cls(str(data["model_sha256"]), str(data["ranges_sha256"]), dict(data["policy"]),
                       dict(data["settings"]), layers, str(data.get("command", "")), float(data.get("seconds", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"'{where}' is malformed ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def load(cls, path: Path, expected_model_sha256: str | None = None) -> SensitivityResult:
        """Read ``path``; missing, unreadable, or measured on another model is a UserError naming the file."""
        path = Path(path)
        data = read_json(path)
        if data is None:
            raise UserError(f"no sensitivity ranking '{path}': run python -m tools sensitivity WORK first")
        result = cls.from_json(data, str(path))
        if expected_model_sha256 is not None and result.model_sha256 != expected_model_sha256:
            raise UserError(f"'{path}' was measured on another model (sha256 {result.model_sha256[:12]}…, this "
                            f"model {expected_model_sha256[:12]}…): run python -m tools sensitivity again")
        return result
