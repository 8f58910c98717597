"""The work folder: one per model; every stage reads and writes its files here (see DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.jsonfile import read_json

EXPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class WorkDir:
    """Paths of the artifacts inside one work folder."""

    root: Path

    @property
    def model(self) -> Path:
        """FP32 ONNX graph (inputs ``sample``, ``timestep``[, ``encoder_hidden_states``]; output ``out``)."""
        return self.root / "model.onnx"

    @property
    def export_json(self) -> Path:
        return self.root / "export.json"

    @property
    def calib_dir(self) -> Path:
        return self.root / "calib"

    @property
    def ranges(self) -> Path:
        return self.root / "ranges.json"

    @property
    def int8_model(self) -> Path:
        return self.root / "model.int8.onnx"

    @property
    def quantize_json(self) -> Path:
        return self.root / "quantize.json"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    def model_for(self, precision: str) -> Path:
        """The ONNX file for ``precision`` (``fp32`` or ``int8``), checked to exist."""
        paths = {"fp32": self.model, "int8": self.int8_model}
        if precision not in paths:
            raise UserError(f"unknown --precision '{precision}'; known: {', '.join(paths)}")
        path = paths[precision]
        if not path.is_file():
            hint = "python -m tools export" if precision == "fp32" else f"python -m tools quantize {self.root}"
            raise UserError(f"no {precision} model in work folder '{self.root}' (missing {path.name}); run {hint}")
        return path

    def load_export_info(self) -> dict[str, Any]:
        """Read ``export.json``; a missing or corrupt file is a UserError naming it."""
        if not self.root.is_dir():
            raise UserError(f"work folder '{self.root}' does not exist; create it with python -m tools export")
        path = self.export_json
        info = read_json(path)
        if info is None:
            raise UserError(f"'{path}' is missing: '{self.root}' is not an exported work folder")
        if info.get("schema_version") != EXPORT_SCHEMA_VERSION:
            raise UserError(f"'{path}' has an unknown schema (expected schema_version {EXPORT_SCHEMA_VERSION})")
        return info
