"""The work folder: one per model; every stage reads and writes its files here (README: "The work folder")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.jsonfile import read_json

EXPORT_SCHEMA_VERSION = 1
#: Q/DQ target -> the tag in its file names: ``model.int8.<tag>.onnx`` and ``quantize.<tag>.json``.
TARGET_TAGS = {"onnxruntime": "ort", "tensorrt": "trt"}
LEGACY_INT8 = "model.int8.onnx"  # work folders quantized before the file name carried the target
#: Precisions whose ONNX graph lives in the work folder (fp16 exists only as TensorRT engines).
ONNX_PRECISIONS = ("fp32", "int8", "fp8")
#: FP8 Q/DQ graphs are written for TensorRT only (quantize --format fp8): ``model.fp8.trt.onnx``.
FP8_MODEL = "model.fp8.trt.onnx"
FP8_RECORD = "quantize.fp8.trt.json"


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

    def int8_model(self, target: str) -> Path:
        """The Q/DQ model written by ``quantize --target target`` (``model.int8.ort.onnx`` / ``model.int8.trt.onnx``)."""
        return self.root / f"model.int8.{_tag(target)}.onnx"

    @property
    def fp8_model(self) -> Path:
        """The FP8 Q/DQ model written by ``quantize --format fp8`` (TensorRT target)."""
        return self.root / FP8_MODEL

    def quantized_model(self, fmt: str, target: str) -> Path:
        """Where ``quantize --format fmt --target target`` writes: ``int8_model(target)`` or ``fp8_model``."""
        return self.fp8_model if fmt == "fp8" else self.int8_model(target)

    def quantize_record(self, model: Path) -> Path:
        """The quantize record beside a Q/DQ model: ``quantize.<tag>.json`` for ``model.int8.<tag>.onnx``,
        ``quantize.fp8.trt.json`` for ``model.fp8.trt.onnx``, ``quantize.json`` for the legacy ``model.int8.onnx``,
        ``<stem>.quantize.json`` for any other file."""
        if model == self.fp8_model:
            return self.root / FP8_RECORD
        for tag in TARGET_TAGS.values():
            if model == self.root / f"model.int8.{tag}.onnx":
                return self.root / f"quantize.{tag}.json"
        if model == self.root / LEGACY_INT8:
            return self.root / "quantize.json"
        return model.parent / f"{model.stem}.quantize.json"

    def int8_models(self) -> dict[str, Path]:
        """Target -> Q/DQ model of every target quantized in this folder (a legacy ``model.int8.onnx`` counts for
        the target its ``quantize.json`` records)."""
        found = {t: self.int8_model(t) for t in TARGET_TAGS if self.int8_model(t).is_file()}
        legacy = self.root / LEGACY_INT8
        if legacy.is_file():
            record = read_json(self.root / "quantize.json") or {}
            target = str(record.get("policy", {}).get("target", "onnxruntime"))
            found.setdefault(target, legacy)
        return found

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    def model_for(self, precision: str, target: str | None = None) -> Path:
        """The ONNX file for ``precision`` (``fp32``, ``int8`` or ``fp8``), checked to exist. For ``int8``: the Q/DQ
        model of ``target``, or with no target the one CPU runtimes run best (``onnxruntime``, else ``tensorrt``);
        for ``fp8``: ``model.fp8.trt.onnx`` (TensorRT target only)."""
        if precision not in ONNX_PRECISIONS:
            raise UserError(f"unknown --precision '{precision}'; known: {', '.join(ONNX_PRECISIONS)}")
        if precision == "fp8":
            if target not in (None, "tensorrt"):
                raise UserError(f"FP8 graphs are written for --target tensorrt only, not '{target}'")
            if not self.fp8_model.is_file():
                raise UserError(f"no fp8 model in work folder '{self.root}' (missing {FP8_MODEL}); run python -m "
                                f"tools quantize {self.root} --format fp8")
            return self.fp8_model
        if precision == "fp32":
            if not self.model.is_file():
                raise UserError(f"no fp32 model in work folder '{self.root}' (missing {self.model.name}); "
                                "run python -m tools export")
            return self.model
        models = self.int8_models()
        wanted = [target] if target else list(TARGET_TAGS)
        for t in wanted:
            if t in models:
                return models[t]
        which = f"--target {target} " if target else ""
        name = self.int8_model(target).name if target else "model.int8.<target>.onnx"
        raise UserError(f"no int8 model in work folder '{self.root}' (missing {name}); "
                        f"run python -m tools quantize {self.root} {which}".rstrip())

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


def _tag(target: str) -> str:
    if target not in TARGET_TAGS:
        raise UserError(f"unknown --target '{target}'; known: {', '.join(TARGET_TAGS)}")
    return TARGET_TAGS[target]
